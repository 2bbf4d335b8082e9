//! Leader-guarded writes: one etcd transaction whose compare is "the leader
//! key of this member still exists, was created at the leadership's epoch
//! and names this member". A deposed leader (a zombie) changes nothing.

use crate::error::stale_epoch;
use crate::kv::{decode, encode};
use crate::member::EtcdCoordinator;
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use recon_core::ports::{FailureKind, PortError};
use recon_engine::cluster::{Barrier, Leadership, RunRequest, RunState, merged_while_starting};
use tracing::{debug, instrument};

/// Writing the barrier or the run re-reads what the write depends on (the
/// current run, the pending request) this often at most when it changes
/// under the write.
const GUARDED_ATTEMPTS: usize = 5;

/// What a guarded transaction found.
enum Guarded {
    /// The compare held; the operations ran.
    Done,
    /// The leadership compare failed: another epoch leads.
    Stale,
    /// The leadership holds but one of the extra compares failed.
    Conflict,
}

impl EtcdCoordinator {
    /// Runs `operations` if `leadership` still leads; `StaleEpoch` if not.
    #[instrument(name = "coord.guarded_write", skip_all, fields(operation = %operation, epoch = leadership.epoch))]
    pub(crate) async fn guarded_write(
        &self,
        operation: &'static str,
        leadership: &Leadership,
        operations: Vec<TxnOp>,
    ) -> Result<(), PortError> {
        match self
            .guarded_txn(operation, leadership, Vec::new(), operations)
            .await?
        {
            Guarded::Done => Ok(()),
            Guarded::Stale | Guarded::Conflict => {
                debug!(operation, "leader-guarded write refused");
                Err(stale_epoch(leadership.epoch))
            }
        }
    }

    /// Writes the current run and, in the same transaction, consumes the
    /// pending request if it is the one the run was started from (a request
    /// made meanwhile stays pending; one merged into this run's request
    /// fails the write, see [`merged_while_starting`]).
    #[instrument(name = "coord.put_run", skip_all, fields(run = %run.run_id, epoch = leadership.epoch))]
    pub(crate) async fn write_run(
        &self,
        leadership: &Leadership,
        run: &RunState,
    ) -> Result<(), PortError> {
        let value = encode(run)?;
        let request_key = self.keys().request();
        for _attempt in 0..GUARDED_ATTEMPTS {
            let mut operations = vec![TxnOp::put(self.keys().current_run(), value.clone(), None)];
            // The request as read must still stand when the run is written.
            let unchanged = match self.kv().get(&request_key).await? {
                Some(entry) => {
                    let pending: RunRequest = decode(&entry)?;
                    if pending == run.request {
                        operations.push(TxnOp::delete(request_key.clone(), None));
                    } else if pending.run_id.as_deref() == Some(run.run_id.as_str()) {
                        return Err(merged_while_starting(&run.run_id));
                    }
                    Compare::mod_revision(
                        request_key.clone(),
                        CompareOp::Equal,
                        entry.mod_revision(),
                    )
                }
                None => Compare::create_revision(request_key.clone(), CompareOp::Equal, 0),
            };
            match self
                .guarded_txn("put run", leadership, vec![unchanged], operations)
                .await?
            {
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
        let current_key = self.keys().current_run();
        for _attempt in 0..GUARDED_ATTEMPTS {
            let current = self.kv().get(&current_key).await?;
            let barrier_put = TxnOp::put(self.keys().barrier(&barrier.run_id), value.clone(), None);
            let history_put = TxnOp::put(self.keys().history(&barrier.run_id), value.clone(), None);
            let mut operations = vec![barrier_put, history_put];
            let mut read_revision = 0;
            if let Some(entry) = &current {
                read_revision = entry.mod_revision();
                let run: RunState = decode(entry)?;
                if run.run_id == barrier.run_id {
                    operations.push(TxnOp::delete(current_key.clone(), None));
                }
            }
            // The current run must still be what was read.
            let unchanged =
                Compare::mod_revision(current_key.clone(), CompareOp::Equal, read_revision);
            let outcome = self
                .guarded_txn("put barrier", leadership, vec![unchanged], operations)
                .await?;
            match outcome {
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

    /// Writes the aborted barrier of a run no leader will end: one
    /// transaction comparing that the current run is still the one read
    /// (its mod revision) and that no election key exists (a create
    /// revision of 0 over the whole election prefix: etcd compares an empty
    /// range with an absent key's zero values); `false` if either failed.
    #[instrument(name = "coord.end_orphaned_run", skip_all, fields(run = %barrier.run_id))]
    pub(crate) async fn write_orphan_barrier(&self, barrier: &Barrier) -> Result<bool, PortError> {
        let current_key = self.keys().current_run();
        let Some(entry) = self.kv().get(&current_key).await? else {
            return Ok(false);
        };
        let run: RunState = decode(&entry)?;
        if run.run_id != barrier.run_id {
            return Ok(false);
        }
        let value = encode(barrier)?;
        let unchanged =
            Compare::mod_revision(current_key.clone(), CompareOp::Equal, entry.mod_revision());
        let leaderless =
            Compare::create_revision(self.keys().election_prefix(), CompareOp::Equal, 0)
                .with_prefix();
        let txn = Txn::new().when([unchanged, leaderless]).and_then([
            TxnOp::put(self.keys().barrier(&barrier.run_id), value.clone(), None),
            TxnOp::put(self.keys().history(&barrier.run_id), value, None),
            TxnOp::delete(current_key, None),
        ]);
        Ok(self.kv().txn("end orphaned run", txn).await?.succeeded())
    }

    /// Advances the trigger mark `name` to `value` if it is higher
    /// (compare-and-swap under the leader guard).
    pub(crate) async fn write_trigger(
        &self,
        leadership: &Leadership,
        name: &str,
        value: u64,
    ) -> Result<bool, PortError> {
        let key = self.keys().trigger(name);
        loop {
            let current = self.kv().get(&key).await?;
            let (fired, revision) = match &current {
                Some(entry) => (Some(decode::<u64>(entry)?), entry.mod_revision()),
                None => (None, 0),
            };
            if fired.is_some_and(|fired| fired >= value) {
                return Ok(false);
            }
            let unchanged = Compare::mod_revision(key.clone(), CompareOp::Equal, revision);
            let put = TxnOp::put(key.clone(), encode(&value)?, None);
            match self
                .guarded_txn("advance trigger", leadership, vec![unchanged], vec![put])
                .await?
            {
                Guarded::Done => return Ok(true),
                Guarded::Stale => return Err(stale_epoch(leadership.epoch)),
                Guarded::Conflict => {
                    debug!("the fired slot changed under the write, reading again")
                }
            }
        }
    }

    async fn guarded_txn(
        &self,
        operation: &'static str,
        leadership: &Leadership,
        extra_compares: Vec<Compare>,
        operations: Vec<TxnOp>,
    ) -> Result<Guarded, PortError> {
        self.alive()?;
        let Ok(epoch) = i64::try_from(leadership.epoch) else {
            return Ok(Guarded::Stale);
        };
        let leader_key = self.election_key();
        let mut compares = vec![
            Compare::create_revision(leader_key.clone(), CompareOp::Equal, epoch),
            Compare::value(leader_key.clone(), CompareOp::Equal, self.member()),
        ];
        compares.extend(extra_compares);
        let txn = Txn::new()
            .when(compares)
            .and_then(operations)
            .or_else([TxnOp::get(leader_key, None)]);
        let answer = self.kv().txn(operation, txn).await?;
        if answer.succeeded() {
            return Ok(Guarded::Done);
        }
        let still_leads = answer.op_responses().iter().any(|response| match response {
            TxnOpResponse::Get(read) => read.kvs().first().is_some_and(|entry| {
                entry.create_revision() == epoch && entry.value() == self.member().as_bytes()
            }),
            _ => false,
        });
        Ok(if still_leads {
            Guarded::Conflict
        } else {
            Guarded::Stale
        })
    }
}
