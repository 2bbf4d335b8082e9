//! The primitives of the coordinator port on ZooKeeper: keys as nodes
//! under the service's node, versions as modification zxids, session-bound
//! values as ephemeral nodes, and a transaction as one multi whose checks
//! stand for the guard and the conditions.
//!
//! A multi can only check a node's version, so each condition is read
//! first and becomes a check of the version read (absent: a create and
//! delete of the node, which fails if it exists); a write whose node
//! changed between that read and the multi fails the multi, and the whole
//! transaction is read and tried again. Deleting a tree is listed after the
//! multi and deleted leaves first, in batches under the same guard.

use crate::error::{permanent, stale_epoch};
use crate::member::ZooKeeperBackend;
use crate::nodes::unescape;
use crate::zk::{Op, Transacted};
use async_trait::async_trait;
use recon_coord::backend::{Backend, Condition, Entry, Guard, Key, Outcome, Txn, Write};
use recon_coord::{Leadership, MemberId};
use recon_core::ports::{FailureKind, PortError};
use std::collections::BTreeSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};
use zookeeper_client as zk;

/// How often a transaction is read and tried again when a node it writes
/// changed under it.
const ATTEMPTS: usize = 5;

/// Nodes deleted per multi when a tree is deleted.
const DELETE_BATCH: usize = 64;

/// What an operation of a multi stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Guard,
    Condition,
    Write,
}

/// A transaction as a multi.
struct Multi {
    ops: Vec<Op>,
    roles: Vec<Role>,
    /// Trees to delete once the multi is done.
    trees: Vec<String>,
}

impl Multi {
    fn push(&mut self, role: Role, op: Op) {
        self.ops.push(op);
        self.roles.push(role);
    }
}

impl ZooKeeperBackend {
    /// The node of a protocol key.
    fn path(&self, key: &Key) -> String {
        self.nodes().path(key)
    }

    fn entry(&self, data: Vec<u8>, stat: &zk::Stat) -> Entry {
        Entry {
            value: data,
            version: u64::try_from(stat.mzxid).unwrap_or(0),
            own_session: stat.ephemeral_owner == self.session().id,
        }
    }

    /// The children of `parent` in ascending (`descending`: descending)
    /// order, at most `limit`, with their values.
    async fn list(
        &self,
        parent: &Key,
        descending: bool,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Entry)>, PortError> {
        let parent = self.path(parent);
        let mut names = self.session().children(&parent).await?;
        if descending {
            names.reverse();
        }
        if let Some(limit) = limit {
            names.truncate(limit);
        }
        let paths: Vec<String> = names
            .iter()
            .map(|name| format!("{parent}/{name}"))
            .collect();
        let values = self.session().read_many(&paths).await?;
        let mut children = Vec::with_capacity(names.len());
        for (name, value) in names.iter().zip(values) {
            let Some((data, stat)) = value else { continue };
            let id = unescape(name)
                .ok_or_else(|| permanent(format!("bad id node {name} under {parent}")))?;
            children.push((id, self.entry(data, &stat)));
        }
        Ok(children)
    }

    /// `txn` as a multi, reading what its checks need; `None` when a
    /// condition already fails.
    async fn multi(&self, txn: &Txn<'_>) -> Result<Option<Multi>, PortError> {
        let mut multi = Multi {
            ops: Vec::new(),
            roles: Vec::new(),
            trees: Vec::new(),
        };
        if let Guard::Leader(leadership) = txn.guard {
            let held = self.leading().clone();
            let Some(lead) = held.filter(|lead| lead.epoch == leadership.epoch) else {
                return Err(stale_epoch(leadership.epoch));
            };
            multi.push(
                Role::Guard,
                Op::Check {
                    path: lead.path,
                    version: 0,
                },
            );
        }
        // A key that must be absent and is written is created (which fails
        // if it exists); others are created and deleted again.
        let written: BTreeSet<&Key> = txn
            .writes
            .iter()
            .filter_map(|write| match write {
                Write::Put { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        let mut created = BTreeSet::new();
        for condition in &txn.conditions {
            let check = |path: String, stat: &zk::Stat| Op::Check {
                path,
                version: stat.version,
            };
            match condition {
                Condition::Absent(key) if written.contains(key) => {
                    created.insert(key.clone());
                }
                Condition::Absent(key) => {
                    let path = self.path(key);
                    multi.push(
                        Role::Condition,
                        Op::Create {
                            path: path.clone(),
                            data: Vec::new(),
                            ephemeral: false,
                        },
                    );
                    multi.push(Role::Condition, Op::Delete { path, version: 0 });
                }
                Condition::Present(key) => multi.push(
                    Role::Condition,
                    Op::Check {
                        path: self.path(key),
                        version: -1,
                    },
                ),
                Condition::Version(key, version) => {
                    let path = self.path(key);
                    match self.session().stat(&path).await? {
                        Some(stat) if u64::try_from(stat.mzxid).ok() == Some(*version) => {
                            multi.push(Role::Condition, check(path, &stat));
                        }
                        _ => return Ok(None),
                    }
                }
                Condition::Value(key, value) => {
                    let path = self.path(key);
                    match self.session().get(&path).await? {
                        Some((data, stat)) if data == *value => {
                            multi.push(Role::Condition, check(path, &stat));
                        }
                        _ => return Ok(None),
                    }
                }
                Condition::OwnSession(key) => {
                    let path = self.path(key);
                    match self.session().stat(&path).await? {
                        Some(stat) if stat.ephemeral_owner == self.session().id => {
                            multi.push(Role::Condition, check(path, &stat));
                        }
                        _ => return Ok(None),
                    }
                }
            }
        }
        for write in &txn.writes {
            match write {
                Write::Put {
                    key,
                    value,
                    session_bound,
                } => {
                    let path = self.path(key);
                    let create = Op::Create {
                        path: path.clone(),
                        data: value.clone(),
                        ephemeral: *session_bound,
                    };
                    if created.contains(key) {
                        multi.push(Role::Condition, create);
                    } else if !session_bound {
                        let data = value.clone();
                        multi.push(Role::Write, Op::Put { path, data });
                    } else {
                        self.put_ephemeral(&mut multi, path, value.clone(), create)
                            .await?;
                    }
                }
                Write::Delete(key) => {
                    let path = self.path(key);
                    if self.session().stat(&path).await?.is_some() {
                        multi.push(Role::Write, Op::Delete { path, version: -1 });
                    }
                }
                Write::DeleteTree(key) => multi.trees.push(self.path(key)),
            }
        }
        Ok(Some(multi))
    }

    /// A session-bound put: this session's node is set; another session's
    /// (this member's id, restarted before its old session expired) or a
    /// persistent one is replaced.
    async fn put_ephemeral(
        &self,
        multi: &mut Multi,
        path: String,
        data: Vec<u8>,
        create: Op,
    ) -> Result<(), PortError> {
        match self.session().stat(&path).await? {
            None => multi.push(Role::Write, create),
            Some(stat) if stat.ephemeral_owner == self.session().id => multi.push(
                Role::Write,
                Op::Set {
                    path,
                    data,
                    version: stat.version,
                },
            ),
            Some(stat) => {
                multi.push(
                    Role::Write,
                    Op::Delete {
                        path,
                        version: stat.version,
                    },
                );
                multi.push(Role::Write, create);
            }
        }
        Ok(())
    }

    /// `root` and every node under it, children before their parents;
    /// empty if `root` does not exist.
    async fn subtree_leaves_first(&self, root: &str) -> Result<Vec<String>, PortError> {
        if self.session().stat(root).await?.is_none() {
            return Ok(Vec::new());
        }
        let mut order = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(path) = pending.pop() {
            for name in self.session().children(&path).await? {
                pending.push(format!("{path}/{name}"));
            }
            order.push(path);
        }
        // Every parent was listed before its children: reversed, children
        // come first.
        order.reverse();
        Ok(order)
    }

    /// Deletes `root` and the nodes under it, in multis that start with `guard`'s
    /// check (the leader's node, if the transaction was leader-guarded).
    async fn delete_tree(&self, root: &str, guard: Option<&Op>) -> Result<Outcome, PortError> {
        let doomed = self.subtree_leaves_first(root).await?;
        for batch in doomed.chunks(DELETE_BATCH) {
            let mut ops: Vec<Op> = guard.into_iter().cloned().collect();
            ops.extend(batch.iter().map(|path| Op::Delete {
                path: path.clone(),
                version: -1,
            }));
            if let Transacted::Failed { index, error } =
                self.session().transact("delete tree", ops).await?
            {
                debug!(index, error = %error, "a deletion batch failed");
                return Ok(if guard.is_some() && index == 0 {
                    Outcome::Stale
                } else {
                    Outcome::Conflict
                });
            }
        }
        Ok(Outcome::Done)
    }

    async fn commit_once(
        &self,
        operation: &'static str,
        txn: &Txn<'_>,
    ) -> Result<Option<Outcome>, PortError> {
        let Some(multi) = self.multi(txn).await? else {
            return Ok(Some(Outcome::Conflict));
        };
        let guard = match (txn.guard, multi.ops.first()) {
            (Guard::Leader(_), Some(check)) => Some(check.clone()),
            _ => None,
        };
        let transacted = match txn.guard {
            Guard::NoCandidate => match self.transact_standing(operation, multi.ops.clone()).await?
            {
                // The standing check is the first operation.
                Some(Transacted::Failed { index: 0, .. }) | None => {
                    return Ok(Some(Outcome::Stale));
                }
                Some(Transacted::Failed { index, error }) => Transacted::Failed {
                    index: index - 1,
                    error,
                },
                Some(Transacted::Done) => Transacted::Done,
            },
            _ if multi.ops.is_empty() => Transacted::Done,
            _ => {
                self.session()
                    .transact(operation, multi.ops.clone())
                    .await?
            }
        };
        match transacted {
            Transacted::Done => {}
            Transacted::Failed { index, error } => {
                debug!(operation, index, error = %error, "a transaction's multi failed");
                return Ok(match multi.roles.get(index) {
                    Some(Role::Guard) => Some(Outcome::Stale),
                    Some(Role::Condition) => Some(Outcome::Conflict),
                    // A node written changed since it was read: again.
                    _ => None,
                });
            }
        }
        for tree in &multi.trees {
            let deleted = self.delete_tree(tree, guard.as_ref()).await?;
            if deleted != Outcome::Done {
                return Ok(Some(deleted));
            }
        }
        Ok(Some(Outcome::Done))
    }
}

#[async_trait]
impl Backend for ZooKeeperBackend {
    fn member_id(&self) -> &str {
        self.member()
    }

    fn session_lost(&self) -> CancellationToken {
        self.session().lost.clone()
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

    async fn get(&self, key: &Key) -> Result<Option<Entry>, PortError> {
        let read = self.session().get(&self.path(key)).await?;
        Ok(read.map(|(data, stat)| self.entry(data, &stat)))
    }

    async fn children(&self, parent: &Key) -> Result<Vec<(String, Entry)>, PortError> {
        self.list(parent, false, None).await
    }

    async fn child_names(&self, parent: &Key) -> Result<Vec<String>, PortError> {
        let parent = self.path(parent);
        let mut ids = Vec::new();
        for name in self.session().children(&parent).await? {
            let id = unescape(&name)
                .ok_or_else(|| permanent(format!("bad id node {name} under {parent}")))?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn last_children(&self, parent: &Key, limit: usize) -> Result<Vec<Entry>, PortError> {
        let children = self.list(parent, true, Some(limit)).await?;
        Ok(children.into_iter().map(|(_, entry)| entry).collect())
    }

    #[instrument(name = "coord.txn", skip_all, fields(operation = %operation, member = %self.member()))]
    async fn commit(&self, operation: &'static str, txn: Txn<'_>) -> Result<Outcome, PortError> {
        self.alive()?;
        for _attempt in 0..ATTEMPTS {
            match self.commit_once(operation, &txn).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => debug!(operation, "a node changed under the transaction, again"),
                Err(error)
                    if error.kind == FailureKind::StaleEpoch
                        && matches!(txn.guard, Guard::Leader(_)) =>
                {
                    return if self.session().lost.is_cancelled() {
                        Err(error)
                    } else {
                        Ok(Outcome::Stale)
                    };
                }
                Err(error) => return Err(error),
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("ZooKeeper {operation}: nodes kept changing under the transaction"),
        ))
    }
}
