//! The primitives of the coordinator port on etcd: keys as escaped paths
//! under the service's prefix, versions as mod revisions, session-bound
//! values under the member's lease, and every transaction one etcd `Txn`
//! whose compares are the guard's and the conditions'.

use crate::error::permanent;
use crate::member::EtcdBackend;
use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use recon_coord::backend::{Backend, Condition, Entry, Guard, Key, Outcome, Write};
use recon_coord::{Leadership, MemberId};
use recon_core::ports::PortError;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

impl EtcdBackend {
    fn entry(&self, value: &KeyValue) -> Entry {
        Entry {
            value: value.value().to_vec(),
            version: u64::try_from(value.mod_revision()).unwrap_or(0),
            own_session: value.lease() == self.lease_id(),
        }
    }

    /// The last segment of `entry`'s key under `parent_prefix`, unescaped.
    fn child_name(&self, key: &[u8], parent_prefix: &str) -> Result<String, PortError> {
        let key = String::from_utf8_lossy(key);
        let segment = key
            .strip_prefix(parent_prefix)
            .ok_or_else(|| permanent(format!("etcd key {key} is not under {parent_prefix}")))?;
        crate::keys::unescape(segment)
            .ok_or_else(|| permanent(format!("bad id segment {segment} under {parent_prefix}")))
    }

    fn compare(&self, condition: &Condition) -> Compare {
        match condition {
            Condition::Absent(key) => {
                Compare::create_revision(self.keys().path(key), CompareOp::Equal, 0)
            }
            Condition::Present(key) => {
                Compare::version(self.keys().path(key), CompareOp::Greater, 0)
            }
            Condition::Version(key, version) => Compare::mod_revision(
                self.keys().path(key),
                CompareOp::Equal,
                i64::try_from(*version).unwrap_or(i64::MAX),
            ),
            Condition::Value(key, value) => {
                Compare::value(self.keys().path(key), CompareOp::Equal, value.clone())
            }
            Condition::OwnSession(key) => {
                Compare::lease(self.keys().path(key), CompareOp::Equal, self.lease_id())
            }
        }
    }

    fn operation(&self, write: Write) -> TxnOp {
        match write {
            Write::Put {
                key,
                value,
                session_bound,
            } => {
                let lease = session_bound.then(|| PutOptions::new().with_lease(self.lease_id()));
                TxnOp::put(self.keys().path(&key), value, lease)
            }
            Write::Delete(key) => TxnOp::delete(self.keys().path(&key), None),
            // The key itself never holds a value in the protocol's layout:
            // only what is under it is deleted.
            Write::DeleteTree(key) => TxnOp::delete(
                self.keys().children_prefix(&key),
                Some(DeleteOptions::new().with_prefix()),
            ),
        }
    }

    /// The guard's compares; `None` when it cannot hold (an epoch etcd
    /// cannot have made).
    fn guard_compares(&self, guard: Guard<'_>) -> Option<Vec<Compare>> {
        match guard {
            Guard::Session => Some(Vec::new()),
            Guard::Leader(leadership) => {
                let epoch = i64::try_from(leadership.epoch).ok()?;
                let leader_key = self.election_key();
                Some(vec![
                    Compare::create_revision(leader_key.clone(), CompareOp::Equal, epoch),
                    Compare::value(leader_key, CompareOp::Equal, self.member()),
                ])
            }
            // etcd compares an empty range with an absent key's zero values.
            Guard::NoCandidate => Some(vec![
                Compare::create_revision(self.keys().election_prefix(), CompareOp::Equal, 0)
                    .with_prefix(),
            ]),
        }
    }

    /// Whether the election key read after a failed transaction still
    /// shows `leadership`.
    fn still_leads(&self, leadership: &Leadership, responses: &[TxnOpResponse]) -> bool {
        responses.iter().any(|response| match response {
            TxnOpResponse::Get(read) => read.kvs().first().is_some_and(|entry| {
                u64::try_from(entry.create_revision()).ok() == Some(leadership.epoch)
                    && entry.value() == self.member().as_bytes()
            }),
            _ => false,
        })
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn member_id(&self) -> &str {
        self.member()
    }

    fn session_lost(&self) -> CancellationToken {
        self.shared.session.clone()
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
        let read = self.kv().get(&self.keys().path(key)).await?;
        Ok(read.map(|value| self.entry(&value)))
    }

    async fn children(&self, parent: &Key) -> Result<Vec<(String, Entry)>, PortError> {
        let prefix = self.keys().children_prefix(parent);
        let mut children = Vec::new();
        for value in self.kv().list(&prefix).await? {
            children.push((self.child_name(value.key(), &prefix)?, self.entry(&value)));
        }
        Ok(children)
    }

    async fn child_names(&self, parent: &Key) -> Result<Vec<String>, PortError> {
        let prefix = self.keys().children_prefix(parent);
        let mut names = Vec::new();
        for key in self.kv().list_keys(&prefix).await? {
            names.push(self.child_name(key.as_bytes(), &prefix)?);
        }
        Ok(names)
    }

    async fn last_children(&self, parent: &Key, limit: usize) -> Result<Vec<Entry>, PortError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let prefix = self.keys().children_prefix(parent);
        let values = self.kv().list_last(&prefix, limit).await?;
        Ok(values.iter().map(|value| self.entry(value)).collect())
    }

    #[instrument(name = "coord.txn", skip_all, fields(operation = %operation, member = %self.member()))]
    async fn commit(
        &self,
        operation: &'static str,
        txn: recon_coord::backend::Txn<'_>,
    ) -> Result<Outcome, PortError> {
        self.alive()?;
        let Some(mut compares) = self.guard_compares(txn.guard) else {
            return Ok(Outcome::Stale);
        };
        compares.extend(
            txn.conditions
                .iter()
                .map(|condition| self.compare(condition)),
        );
        let operations: Vec<TxnOp> = txn
            .writes
            .into_iter()
            .map(|write| self.operation(write))
            .collect();
        let mut etcd_txn = Txn::new().when(compares).and_then(operations);
        if let Guard::Leader(_) = txn.guard {
            etcd_txn = etcd_txn.or_else([TxnOp::get(self.election_key(), None)]);
        }
        let answer = self.kv().txn(operation, etcd_txn).await?;
        if answer.succeeded() {
            return Ok(Outcome::Done);
        }
        Ok(match txn.guard {
            Guard::Session => Outcome::Conflict,
            Guard::Leader(leadership) if self.still_leads(leadership, &answer.op_responses()) => {
                Outcome::Conflict
            }
            Guard::Leader(_) | Guard::NoCandidate => Outcome::Stale,
        })
    }
}
