//! Leader-guarded writes: one multi transaction that starts with a check of
//! the leadership's own election node (its path, version 0: the node is
//! never written after its creation). A deleted node — resigned, session
//! closed or expired — fails the check and nothing is written. A deposed
//! leader (a zombie) changes nothing.

use crate::error::stale_epoch;
use crate::member::ZooKeeperCoordinator;
use crate::zk::{Op, Transacted, decode, encode};
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::{Barrier, Leadership, RunRequest, RunState, merged_while_starting};
use tracing::{debug, instrument};

/// Writing the barrier, a run or a trigger re-reads what it depends on this
/// often at most when it changes under the write.
const GUARDED_ATTEMPTS: usize = 5;

/// What a guarded transaction found.
pub(crate) enum Guarded {
    /// The check held; the operations ran.
    Done,
    /// The leadership check failed: this epoch no longer leads.
    Stale,
    /// The leadership holds but another operation's condition failed.
    Conflict,
}

impl ZooKeeperCoordinator {
    /// Runs `ops` if `leadership` still leads; `StaleEpoch` if not.
    #[instrument(name = "coord.guarded_write", skip_all, fields(operation = %operation, epoch = leadership.epoch))]
    pub(crate) async fn guarded_write(
        &self,
        operation: &'static str,
        leadership: &Leadership,
        ops: Vec<Op>,
    ) -> Result<(), PortError> {
        match self.guarded_txn(operation, leadership, ops).await? {
            Guarded::Done => Ok(()),
            Guarded::Stale | Guarded::Conflict => {
                debug!(operation, "leader-guarded write refused");
                Err(stale_epoch(leadership.epoch))
            }
        }
    }

    /// The transaction `[check own election node, ops…]`.
    pub(crate) async fn guarded_txn(
        &self,
        operation: &'static str,
        leadership: &Leadership,
        ops: Vec<Op>,
    ) -> Result<Guarded, PortError> {
        self.alive()?;
        let held = self.leading().clone();
        let Some(lead) = held.filter(|lead| lead.epoch == leadership.epoch) else {
            return Ok(Guarded::Stale);
        };
        let mut guarded = Vec::with_capacity(ops.len() + 1);
        guarded.push(Op::Check {
            path: lead.path,
            version: 0,
        });
        guarded.extend(ops);
        match self.session().transact(operation, guarded).await? {
            Transacted::Done => Ok(Guarded::Done),
            Transacted::Failed { index: 0, .. } => Ok(Guarded::Stale),
            Transacted::Failed { index, error } => {
                debug!(operation, index, error = %error, "a guarded write's condition failed");
                Ok(Guarded::Conflict)
            }
        }
    }

    /// Writes the current run and consumes the pending request if it is
    /// still the one the run was started from (a versioned delete: one made
    /// or merged meanwhile waits for the next run).
    pub(crate) async fn write_run(
        &self,
        leadership: &Leadership,
        run: &RunState,
    ) -> Result<(), PortError> {
        let value = encode(run)?;
        let request_path = self.nodes().request();
        for _attempt in 0..GUARDED_ATTEMPTS {
            let mut ops = vec![Op::Put {
                path: self.nodes().current_run(),
                data: value.clone(),
            }];
            if let Some((data, stat)) = self.session().get(&request_path).await? {
                let pending: RunRequest = decode(&request_path, &data)?;
                if pending == run.request {
                    ops.push(Op::Delete {
                        path: request_path.clone(),
                        version: stat.version,
                    });
                } else if pending.run_id.as_deref() == Some(run.run_id.as_str()) {
                    return Err(merged_while_starting(&run.run_id));
                }
            }
            match self.guarded_txn("put run", leadership, ops).await? {
                Guarded::Done => return Ok(()),
                Guarded::Stale => return Err(stale_epoch(leadership.epoch)),
                Guarded::Conflict => debug!("the pending request changed under the run, retrying"),
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the pending request kept changing while the run was written",
        ))
    }

    /// Writes the barrier and its copy in the run history and, in the same
    /// transaction, deletes the current run if it is the barrier's run.
    #[instrument(name = "coord.put_barrier", skip_all, fields(run = %barrier.run_id, epoch = leadership.epoch))]
    pub(crate) async fn write_barrier(
        &self,
        leadership: &Leadership,
        barrier: &Barrier,
    ) -> Result<(), PortError> {
        let value = encode(barrier)?;
        let current_path = self.nodes().current_run();
        for _attempt in 0..GUARDED_ATTEMPTS {
            let mut ops = vec![
                Op::Put {
                    path: self.nodes().barrier(&barrier.run_id),
                    data: value.clone(),
                },
                Op::Put {
                    path: self.nodes().history_entry(&barrier.run_id),
                    data: value.clone(),
                },
            ];
            // The current run must still be what was read. (Its absence
            // cannot be checked in a multi; only this leader writes it.)
            if let Some((data, stat)) = self.session().get(&current_path).await? {
                let run: RunState = decode(&current_path, &data)?;
                let path = current_path.clone();
                ops.push(if run.run_id == barrier.run_id {
                    Op::Delete {
                        path,
                        version: stat.version,
                    }
                } else {
                    Op::Check {
                        path,
                        version: stat.version,
                    }
                });
            }
            match self.guarded_txn("put barrier", leadership, ops).await? {
                Guarded::Done => return Ok(()),
                Guarded::Stale => return Err(stale_epoch(leadership.epoch)),
                Guarded::Conflict => debug!("current run changed under the barrier, retrying"),
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            "the current run kept changing while the barrier was written",
        ))
    }

    /// Advances the trigger mark `name` to `value` if it is higher
    /// (compare-and-swap on the node's version, under the leader guard).
    pub(crate) async fn write_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError> {
        let path = self.nodes().trigger(name);
        let data = encode(&value)?;
        for _attempt in 0..GUARDED_ATTEMPTS {
            let op = match self.session().get(&path).await? {
                Some((current, stat)) => {
                    let fired: u64 = decode(&path, &current)?;
                    if fired >= value {
                        return Ok(false);
                    }
                    Op::Set {
                        path: path.clone(),
                        data: data.clone(),
                        version: stat.version,
                    }
                }
                None => Op::Create {
                    path: path.clone(),
                    data: data.clone(),
                    ephemeral: false,
                },
            };
            match self
                .guarded_txn("advance trigger", leadership, vec![op])
                .await?
            {
                Guarded::Done => return Ok(true),
                Guarded::Stale => return Err(stale_epoch(leadership.epoch)),
                Guarded::Conflict => {
                    debug!("the trigger mark changed under the write, reading again")
                }
            }
        }
        Err(PortError::new(
            FailureKind::Transient,
            format!("the trigger mark {name} kept changing while it was advanced"),
        ))
    }
}
