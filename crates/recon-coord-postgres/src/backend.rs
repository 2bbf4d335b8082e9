//! The primitives on PostgreSQL: reads that see live values only, and every
//! transaction serialised per service (see the crate docs).

use crate::session::PostgresBackend;
use async_trait::async_trait;
use recon_coord::backend::{
    Backend, Condition, Entry, Guard, Key, Outcome, Txn, Write, escape_segment, permanent,
    unescape_segment,
};
use recon_coord::protocol::ELECTION;
use recon_coord::{Leadership, MemberId, session_lost};
use recon_core::ports::{FailureKind, PortError};
use sea_orm::{ConnectionTrait, QueryResult};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

/// The columns every read selects.
const COLUMNS: &str = "SELECT key, value, version, session FROM recon_coord_entries e";

/// The filter that hides values of expired sessions.
const LIVE: &str = "(session IS NULL OR EXISTS (
     SELECT 1 FROM recon_coord_sessions s
     WHERE s.id = e.session AND s.expires_at > clock_timestamp()))";

/// A key as stored: its segments escaped and joined with `/`.
pub(crate) fn path(key: &Key) -> String {
    key.path_under("", escape_segment)
}

/// The range `[start, end)` of the keys under `key` (`/` + 1 is `0`).
fn children_range(key: &Key) -> (String, String) {
    let base = path(key);
    (format!("{base}/"), format!("{base}0"))
}

/// The first live candidate of the election: its value (the member id),
/// its key and creation revision.
pub(crate) const FIRST_CANDIDATE: &str = "SELECT value, key, created FROM recon_coord_entries e
     WHERE prefix = $1 AND key >= $2 AND key < $3
       AND EXISTS (SELECT 1 FROM recon_coord_sessions s
                   WHERE s.id = e.session AND s.expires_at > clock_timestamp())
     ORDER BY created LIMIT 1";

impl PostgresBackend {
    fn entry(&self, row: &QueryResult) -> Result<(String, Entry), PortError> {
        let read = |error: sea_orm::DbErr| {
            PortError::with_source(FailureKind::Permanent, error).context("read a coordinator row")
        };
        let key: String = row.try_get_by_index(0).map_err(read)?;
        let value: Vec<u8> = row.try_get_by_index(1).map_err(read)?;
        let version: i64 = row.try_get_by_index(2).map_err(read)?;
        let session: Option<i64> = row.try_get_by_index(3).map_err(read)?;
        let entry = Entry {
            value,
            version: u64::try_from(version).unwrap_or(0),
            own_session: session == Some(self.session_id()),
        };
        Ok((key, entry))
    }

    /// The live rows under `parent` directly, in `order`, at most `limit`.
    async fn list(
        &self,
        parent: &Key,
        order: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Entry)>, PortError> {
        let (start, end) = children_range(parent);
        let limit = limit.map_or(String::new(), |limit| format!(" LIMIT {limit}"));
        let sql = format!(
            "{COLUMNS} WHERE prefix = $1 AND key >= $2 AND key < $3 AND {LIVE} \
             ORDER BY key {order}{limit}"
        );
        let values = vec![self.prefix().into(), start.clone().into(), end.into()];
        let rows = self
            .call(
                "list",
                self.shared.db.query_all_raw(Self::statement(&sql, values)),
            )
            .await?;
        let mut children = Vec::with_capacity(rows.len());
        for row in &rows {
            let (key, entry) = self.entry(row)?;
            let segment = &key[start.len()..];
            // Deeper keys are not children.
            if segment.contains('/') {
                continue;
            }
            let name = unescape_segment(segment)
                .ok_or_else(|| permanent(format!("bad key segment {segment} under {start}")))?;
            children.push((name, entry));
        }
        Ok(children)
    }

    /// The election's key range.
    pub(crate) fn election_range() -> (String, String) {
        children_range(&Key::root(ELECTION))
    }

    /// `txn` as the body of `recon_coord_commit` (see `schema.rs`).
    fn commit_body(&self, txn: Txn<'_>) -> serde_json::Value {
        let (election_start, election_end) = Self::election_range();
        let (guard, epoch) = match txn.guard {
            Guard::Session => ("session", 0),
            Guard::NoCandidate => ("no_candidate", 0),
            Guard::Leader(leadership) => ("leader", leadership.epoch),
        };
        let conditions: Vec<serde_json::Value> = txn
            .conditions
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key) => json!({"kind": "absent", "key": path(key)}),
                Condition::Present(key) => json!({"kind": "present", "key": path(key)}),
                Condition::Version(key, version) => {
                    json!({"kind": "version", "key": path(key), "version": version})
                }
                Condition::Value(key, value) => {
                    json!({"kind": "value", "key": path(key), "value": hex::encode(value)})
                }
                Condition::OwnSession(key) => json!({"kind": "own_session", "key": path(key)}),
            })
            .collect();
        let writes: Vec<serde_json::Value> = txn
            .writes
            .into_iter()
            .map(|write| match write {
                Write::Put {
                    key,
                    value,
                    session_bound,
                } => json!({
                    "kind": "put",
                    "key": path(&key),
                    "value": hex::encode(value),
                    "session_bound": session_bound,
                }),
                Write::Delete(key) => json!({"kind": "delete", "key": path(&key)}),
                // The key itself never holds a value in the protocol's
                // layout: only what is under it is deleted.
                Write::DeleteTree(key) => {
                    let (start, end) = children_range(&key);
                    json!({"kind": "delete_tree", "start": start, "end": end})
                }
            })
            .collect();
        json!({
            "prefix": self.prefix(),
            "session": self.session_id(),
            "member": self.member(),
            "guard": guard,
            "epoch": epoch,
            "election_start": election_start,
            "election_end": election_end,
            "conditions": conditions,
            "writes": writes,
        })
    }
}

#[async_trait]
impl Backend for PostgresBackend {
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
        let sql = format!("{COLUMNS} WHERE prefix = $1 AND key = $2 AND {LIVE}");
        let values = vec![self.prefix().into(), path(key).into()];
        let row = self
            .call(
                "get",
                self.shared.db.query_one_raw(Self::statement(&sql, values)),
            )
            .await?;
        match row {
            Some(row) => Ok(Some(self.entry(&row)?.1)),
            None => Ok(None),
        }
    }

    async fn children(&self, parent: &Key) -> Result<Vec<(String, Entry)>, PortError> {
        self.list(parent, "ASC", None).await
    }

    async fn child_names(&self, parent: &Key) -> Result<Vec<String>, PortError> {
        let children = self.list(parent, "ASC", None).await?;
        Ok(children.into_iter().map(|(name, _)| name).collect())
    }

    async fn last_children(&self, parent: &Key, limit: usize) -> Result<Vec<Entry>, PortError> {
        let children = self.list(parent, "DESC", Some(limit)).await?;
        Ok(children.into_iter().map(|(_, entry)| entry).collect())
    }

    #[instrument(name = "coord.txn", skip_all, fields(operation = %operation, member = %self.member()))]
    async fn commit(&self, operation: &'static str, body: Txn<'_>) -> Result<Outcome, PortError> {
        if self.shared.session.is_cancelled() {
            return Err(session_lost(self.member()));
        }
        let call = Self::statement(
            "SELECT recon_coord_commit($1::jsonb)",
            vec![self.commit_body(body).to_string().into()],
        );
        let row = self
            .call(operation, self.shared.db.query_one_raw(call))
            .await?
            .ok_or_else(|| permanent("recon_coord_commit answered nothing"))?;
        let answer: String = row.try_get_by_index(0).map_err(|error| {
            PortError::with_source(FailureKind::Permanent, error)
                .context("read the commit's answer")
        })?;
        match answer.as_str() {
            "done" => Ok(Outcome::Done),
            "stale" => Ok(Outcome::Stale),
            "conflict" => Ok(Outcome::Conflict),
            "session_lost" => {
                self.shared.session.cancel();
                Err(session_lost(self.member()))
            }
            other => Err(permanent(format!("recon_coord_commit answered {other:?}"))),
        }
    }
}
