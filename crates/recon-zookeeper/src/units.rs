//! A run's per-member and per-unit nodes: pause acknowledgements, claims
//! and done-records, and reading a run's collections.
//!
//! Acks and claims are ephemeral nodes of the member's session. A claim is
//! created in one transaction with a check of the assignment node at the
//! version whose value named this member; a done-record in one transaction
//! with checks of the assignment and of the member's own claim node (read
//! first: it must name the member and belong to its session). A claim node
//! is never rewritten, so its version only tells it exists; that it is
//! still this session's follows from ephemeral nodes of a live session
//! being deleted by nobody but a purge of the finished run.

use crate::error::{permanent, session_lost};
use crate::member::ZooKeeperCoordinator;
use crate::nodes::{Collection, unescape};
use crate::zk::{Op, Transacted, decode, encode};
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::{DoneRecord, MemberId};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use tracing::instrument;
use zookeeper_client as zk;

/// How often a claim, a done-record or an ack re-reads what it depends on
/// when it changes under the write.
const ATTEMPTS: usize = 5;

impl ZooKeeperCoordinator {
    /// A run's collection, keyed by the (unescaped) member or unit id.
    pub(crate) async fn read_collection<T: DeserializeOwned>(
        &self,
        run_id: &str,
        collection: Collection,
    ) -> Result<BTreeMap<String, T>, PortError> {
        let parent = self.nodes().collection(run_id, collection);
        let names = self.session().children(&parent).await?;
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("{parent}/{name}"))
            .collect();
        let values = self.session().read_many(&paths).await?;
        let mut entries = BTreeMap::new();
        for ((name, path), value) in names.iter().zip(&paths).zip(values) {
            let Some((data, _)) = value else { continue };
            let id = unescape(name)
                .ok_or_else(|| permanent(format!("bad id node {name} under {parent}")))?;
            entries.insert(id, decode(path, &data)?);
        }
        Ok(entries)
    }

    /// The ids named by a run's collection's nodes (no values read).
    pub(crate) async fn collection_ids(
        &self,
        run_id: &str,
        collection: Collection,
    ) -> Result<Vec<String>, PortError> {
        let parent = self.nodes().collection(run_id, collection);
        let mut ids = Vec::new();
        for name in self.session().children(&parent).await? {
            let id = unescape(&name)
                .ok_or_else(|| permanent(format!("bad id node {name} under {parent}")))?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Creates this member's ack as an ephemeral node of its session.
    /// Nothing is written for a run that has ended (its barrier is in the
    /// history): a late ack after the run's nodes were purged would create
    /// their persistent parents again, left for ever.
    pub(crate) async fn write_ack(&self, run_id: &str) -> Result<(), PortError> {
        if self.run_ended(run_id).await? {
            return Ok(());
        }
        let path = self.nodes().entry(run_id, Collection::Acks, self.member());
        let value = encode(&self.member())?;
        self.create_own_ephemeral("ack pause", &path, value).await
    }

    /// Whether the run `run_id` has ended: its barrier is in the history.
    pub(crate) async fn run_ended(&self, run_id: &str) -> Result<bool, PortError> {
        let history = self.nodes().history_entry(run_id);
        Ok(self.session().stat(&history).await?.is_some())
    }

    /// Creates an ephemeral node of this session at `path`; one there of
    /// another session (a restarted member's) is replaced.
    async fn create_own_ephemeral(
        &self,
        operation: &'static str,
        path: &str,
        value: Vec<u8>,
    ) -> Result<(), PortError> {
        for _attempt in 0..ATTEMPTS {
            self.alive()?;
            let create = Op::Create {
                path: path.to_owned(),
                data: value.clone(),
                ephemeral: true,
            };
            match self.session().transact(operation, vec![create]).await? {
                Transacted::Done => return Ok(()),
                Transacted::Failed {
                    error: zk::Error::NodeExists,
                    ..
                } => {}
                Transacted::Failed { error, .. } => {
                    return Err(self.session().failure(operation, &error));
                }
            }
            match self.session().stat(path).await? {
                Some(stat) if stat.ephemeral_owner == self.session().id => return Ok(()),
                Some(stat) => {
                    let delete = Op::Delete {
                        path: path.to_owned(),
                        version: stat.version,
                    };
                    self.session().transact(operation, vec![delete]).await?;
                }
                None => {}
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("ZooKeeper {operation}: the node kept changing"),
        ))
    }

    /// The assignment of `unit` if it names this member: its version.
    async fn assigned_version(&self, run_id: &str, unit: &str) -> Result<Option<i32>, PortError> {
        let path = self.nodes().entry(run_id, Collection::Assign, unit);
        let Some((data, stat)) = self.session().get(&path).await? else {
            return Ok(None);
        };
        let assignee: MemberId = decode(&path, &data)?;
        Ok((assignee == self.member()).then_some(stat.version))
    }

    /// This member's claim of `unit`, if it stands: its version.
    async fn own_claim_version(&self, run_id: &str, unit: &str) -> Result<Option<i32>, PortError> {
        let path = self.nodes().entry(run_id, Collection::Claims, unit);
        let Some((data, stat)) = self.session().get(&path).await? else {
            return Ok(None);
        };
        let holder: MemberId = decode(&path, &data)?;
        let ours = holder == self.member() && stat.ephemeral_owner == self.session().id;
        Ok(ours.then_some(stat.version))
    }

    /// Creates the claim node (ephemeral) if the unit is assigned to this
    /// member and nobody holds it; `true` too if this member holds it and
    /// it is still assigned to it.
    #[instrument(name = "coord.claim", skip_all, fields(member = %self.member(), run = %run_id, unit = %unit))]
    pub(crate) async fn claim_unit(&self, run_id: &str, unit: &str) -> Result<bool, PortError> {
        let claim = self.nodes().entry(run_id, Collection::Claims, unit);
        let assign = self.nodes().entry(run_id, Collection::Assign, unit);
        let value = encode(&self.member())?;
        for _attempt in 0..ATTEMPTS {
            self.alive()?;
            let Some(version) = self.assigned_version(run_id, unit).await? else {
                return Ok(false);
            };
            let ops = vec![
                Op::Check {
                    path: assign.clone(),
                    version,
                },
                Op::Create {
                    path: claim.clone(),
                    data: value.clone(),
                    ephemeral: true,
                },
            ];
            match self.session().transact("claim unit", ops).await? {
                Transacted::Done => return Ok(true),
                // The assignment changed since it was read: read it again.
                Transacted::Failed { index: 0, .. } => continue,
                Transacted::Failed {
                    error: zk::Error::NodeExists,
                    ..
                } => {
                    let ours = self.own_claim_version(run_id, unit).await?.is_some();
                    return Ok(ours && self.assigned_version(run_id, unit).await?.is_some());
                }
                Transacted::Failed { error, .. } => {
                    return Err(self.session().failure("claim unit", &error));
                }
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("the assignment of unit {unit} kept changing while it was claimed"),
        ))
    }

    /// Writes a done-record if the unit is still assigned to this member and
    /// its claim (an ephemeral node of this session) still stands: a member
    /// frozen past its session, whose unit went to another, writes nothing.
    #[instrument(name = "coord.put_done", skip_all, fields(member = %self.member(), run = %run_id, unit = %unit))]
    pub(crate) async fn put_done_if_assigned(
        &self,
        run_id: &str,
        unit: &str,
        record: &DoneRecord,
    ) -> Result<(), PortError> {
        let value = encode(record)?;
        for _attempt in 0..ATTEMPTS {
            if self.session().lost.is_cancelled() {
                return Err(session_lost(self.member()));
            }
            let assigned = self.assigned_version(run_id, unit).await?;
            let claimed = self.own_claim_version(run_id, unit).await?;
            let (Some(assigned), Some(claimed)) = (assigned, claimed) else {
                return Err(not_assigned(run_id, unit, self.member()));
            };
            let ops = vec![
                Op::Check {
                    path: self.nodes().entry(run_id, Collection::Assign, unit),
                    version: assigned,
                },
                Op::Check {
                    path: self.nodes().entry(run_id, Collection::Claims, unit),
                    version: claimed,
                },
                Op::Put {
                    path: self.nodes().entry(run_id, Collection::Done, unit),
                    data: value.clone(),
                },
            ];
            match self.session().transact("put done", ops).await? {
                Transacted::Done => return Ok(()),
                // A condition changed since it was read: decide again.
                Transacted::Failed { .. } => continue,
            }
        }
        Err(not_assigned(run_id, unit, self.member()))
    }
}

fn not_assigned(run_id: &str, unit: &str, member: &str) -> PortError {
    PortError::new(
        FailureKind::StaleEpoch,
        format!("unit {unit} of run {run_id} is no longer assigned to and claimed by {member}"),
    )
}
