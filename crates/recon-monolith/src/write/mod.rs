//! The write path: create, update and delete rows of any declared kind.
//!
//! Every operation is one transaction that locks the meta row, allocates
//! one sequence number per change (so sequence order is commit order),
//! writes the rows with version `(current generation, sequence)` and
//! appends one outbox event per change (`crate::events`). A scoped row
//! needs its scope row (404 otherwise) and the rows it references (409).
//! Deletions cascade: deleting a scope row deletes every row inside it,
//! deleting any other row the rows that reference it, each with its own
//! event, children first (`cascade`).
//!
//! `typed` is the default schema's typed API (`put_user` and friends)
//! over the same path.

mod cascade;
pub mod check;
mod typed;

pub use check::{MAX_JSON_BYTES, MAX_TEXT_BYTES};

use crate::Monolith;
use crate::db::{self, allocate_sequences, lock_meta};
use crate::error::{DbResultExt, Error, Result};
use crate::events::{self, Operation};
use crate::model::KindPlan;
use crate::outbox::NewEvent;
use crate::rows::{RowRef, cursor_of};
use crate::sql;
use recon_core::Version;
use recon_core::schema::FieldValue;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, Value};
use serde::Serialize;
use tracing::instrument;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteOutcome {
    /// The version of the addressed entity's change (for a cascading delete,
    /// the last change, which is the addressed entity's deletion).
    pub version: Version,
    /// How many changes (and outbox events) the write made.
    pub changes: u64,
}

impl Monolith {
    /// The kind named `name` (singular or plural), or 404.
    pub(crate) fn kind_named(&self, name: &str) -> Result<&KindPlan> {
        self.model()
            .kind(name)
            .ok_or_else(|| Error::NotFound(format!("kind {name:?}")))
    }

    /// Creates or replaces the row of kind `kind_name` (singular or plural) with
    /// key `key` in scope `scope` (for the scope kind: `key` is `[scope]`),
    /// holding `values` (one per data field, in declaration order).
    #[instrument(skip_all, name = "monolith.write", fields(kind = %kind_name, scope = %scope))]
    pub async fn upsert(
        &self,
        kind_name: &str,
        scope: &str,
        key: Vec<String>,
        values: Vec<FieldValue>,
    ) -> Result<WriteOutcome> {
        let kind = self.kind_named(kind_name)?;
        self.check_address(kind, scope, &key)?;
        check::check_values(kind, &values)?;
        let txn = db::begin_write(&self.connection).await?;
        lock_meta(&txn).await?;
        self.check_references(&txn, kind, scope, &key).await?;
        let mut block = allocate_sequences(&txn, 1).await?;
        let row = RowRef {
            scope,
            key: &key,
            values: &values,
            version: block.next_version()?,
        };
        let backend = self.backend();
        let mut parameters = Vec::with_capacity(sql::row_width(kind));
        sql::bind_row(kind, backend, row, &mut parameters)?;
        let statement = Statement::from_sql_and_values(
            backend,
            self.statements[kind.index].upsert.clone(),
            parameters,
        );
        txn.execute_raw(statement).await.during("write a row")?;
        let event = NewEvent {
            scope: scope.to_owned(),
            version: row.version,
            payload: events::payload(self.model(), kind, row, Operation::Upsert)?,
        };
        crate::outbox::append(&txn, vec![event]).await?;
        txn.commit().await.during("commit a write")?;
        Ok(WriteOutcome {
            version: row.version,
            changes: 1,
        })
    }

    /// Deletes the row of kind `kind_name` with key `key` in scope `scope`, and
    /// everything it cascades to (`cascade`). A row that does not exist
    /// is [`Error::NotFound`].
    #[instrument(skip_all, name = "monolith.write", fields(kind = %kind_name, scope = %scope))]
    pub async fn delete(
        &self,
        kind_name: &str,
        scope: &str,
        key: Vec<String>,
    ) -> Result<WriteOutcome> {
        let kind = self.kind_named(kind_name)?;
        self.check_address(kind, scope, &key)?;
        let txn = db::begin_write(&self.connection).await?;
        lock_meta(&txn).await?;
        if !self.exists(&txn, kind, scope, &key).await? {
            return Err(self.not_found(kind, scope, &key));
        }
        let mut plan = cascade::collect(self, &txn, kind, scope, &key).await?;
        plan.doomed.push((kind.index, key.clone()));
        let count = u64::try_from(plan.doomed.len()).unwrap_or(u64::MAX);
        let mut block = allocate_sequences(&txn, count).await?;
        let mut events = Vec::with_capacity(plan.doomed.len());
        for (index, doomed_key) in &plan.doomed {
            let row = RowRef {
                scope,
                key: doomed_key,
                values: &[],
                version: block.next_version()?,
            };
            let doomed_kind = self.model().kind_at(*index);
            events.push(NewEvent {
                scope: scope.to_owned(),
                version: row.version,
                payload: events::payload(self.model(), doomed_kind, row, Operation::Delete)?,
            });
        }
        cascade::delete(self, &txn, &plan, kind, scope, &key).await?;
        let version = events.last().map_or(Version::ZERO, |event| event.version);
        crate::outbox::append(&txn, events).await?;
        txn.commit().await.during("commit a delete")?;
        Ok(WriteOutcome {
            version,
            changes: count,
        })
    }

    /// Checks where a write goes: the scope value and the key (a scope
    /// row's key is its scope value).
    fn check_address(&self, kind: &KindPlan, scope: &str, key: &[String]) -> Result<()> {
        check::check_scope(self.model(), scope)?;
        if !kind.scoped() && key != [scope] {
            return Err(Error::BadRequest(format!(
                "a {} row's key is its own {} id {scope:?}",
                kind.name(),
                kind.name()
            )));
        }
        check::check_key(kind, key)
    }

    /// A scoped row needs its scope row (404) and the rows it references
    /// (409), read inside the write transaction.
    async fn check_references(
        &self,
        txn: &DatabaseTransaction,
        kind: &KindPlan,
        scope: &str,
        key: &[String],
    ) -> Result<()> {
        if !kind.scoped() {
            return Ok(());
        }
        let scope_kind = self.model().scope();
        let scope_key = [scope.to_owned()];
        if !self.exists(txn, scope_kind, scope, &scope_key).await? {
            return Err(self.not_found(scope_kind, scope, &scope_key));
        }
        for reference in &kind.references {
            let target = self.model().kind_at(reference.kind);
            let target_key: Vec<String> = reference
                .key_positions
                .iter()
                .map(|position| key[*position].clone())
                .collect();
            if !self.exists(txn, target, scope, &target_key).await? {
                return Err(Error::Conflict(format!(
                    "{} {:?} does not exist in {} {scope:?}",
                    target.name(),
                    cursor_of(&target_key),
                    scope_kind.name()
                )));
            }
        }
        Ok(())
    }

    /// Whether the row exists (read in `connection`'s snapshot).
    pub(crate) async fn exists(
        &self,
        connection: &impl ConnectionTrait,
        kind: &KindPlan,
        scope: &str,
        key: &[String],
    ) -> Result<bool> {
        let mut parameters: Vec<Value> = Vec::with_capacity(key.len() + 1);
        if kind.scoped() {
            parameters.push(scope.to_owned().into());
        }
        parameters.extend(key.iter().map(|part| Value::from(part.clone())));
        let statement = Statement::from_sql_and_values(
            self.backend(),
            self.statements[kind.index].exists.clone(),
            parameters,
        );
        let found = connection
            .query_one_raw(statement)
            .await
            .during("check that an entity exists")?;
        Ok(found.is_some())
    }

    /// The 404 of a missing row: `tenant "t1"`, or `user "u1" in tenant
    /// "t1"`.
    pub(crate) fn not_found(&self, kind: &KindPlan, scope: &str, key: &[String]) -> Error {
        if !kind.scoped() {
            return Error::NotFound(format!("{} {scope:?}", kind.name()));
        }
        Error::NotFound(format!(
            "{} {:?} in {} {scope:?}",
            kind.name(),
            cursor_of(key),
            self.model().scope().name()
        ))
    }
}
