//! Operator actions that reproduce a database restore.
//!
//! A backup copies the data (every kind of the schema) and the meta
//! counter into the `backup_*` tables in one snapshot. A restore
//! replaces the data with a backup's copy in one transaction: restored rows
//! keep the versions they had, the sequence counter goes back to the
//! backup's value (as a real database restore would), and the generation
//! becomes one more than the highest generation ever seen, so that every
//! later write is newer than anything from before the restore. A restore
//! emits no change events: that is the point, replicas drift. The outbox is
//! not part of a backup.

use crate::Monolith;
use crate::db::entities::{backup, meta};
use crate::db::{self, lock_meta, read_meta, version_columns};
use crate::error::{DbResultExt, Error, Result};
use crate::model::KindPlan;
use crate::outbox::now_ms;
use recon_core::Version;
use sea_orm::sea_query::Expr;
use sea_orm::{
    AccessMode, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    IsolationLevel, QueryFilter, QuerySelect, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use serde::Serialize;
use tracing::{info, instrument};

/// Identifies a backup.
pub type BackupId = i64;

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RestoreOutcome {
    /// The restored backup.
    pub backup_id: BackupId,
    /// The new generation.
    pub generation: u64,
    /// The watermark right after the restore: the new generation and the
    /// backup's sequence counter.
    pub watermark: Version,
}

/// The columns a backup copies of a kind's table.
fn copied_columns(kind: &KindPlan) -> String {
    let mut columns: Vec<&str> = kind.primary_key();
    columns.extend(kind.fields().iter().map(|field| field.name.as_str()));
    columns.extend(["generation", "sequence"]);
    columns.join(", ")
}

impl Monolith {
    /// Takes a backup of the data and the meta counter; returns its id.
    #[instrument(skip_all, name = "monolith.backup")]
    pub async fn backup(&self) -> Result<BackupId> {
        let options = match self.backend() {
            DbBackend::Postgres => TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadWrite),
                ..TransactionOptions::default()
            },
            _ => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            },
        };
        let txn = self
            .connection
            .begin_with_options(options)
            .await
            .during("begin a backup")?;
        let watermark = read_meta(&txn).await?;
        let (generation, sequence) = version_columns(watermark)?;
        let inserted = backup::Entity::insert(backup::ActiveModel {
            created_at_ms: Set(now_ms()),
            generation: Set(generation),
            sequence: Set(sequence),
            ..Default::default()
        })
        .exec(&txn)
        .await
        .during("record a backup")?;
        let backup_id = inserted.last_insert_id;
        for index in self.model().insertion_order() {
            let kind = self.model().kind_at(index);
            let columns = copied_columns(kind);
            let statement = format!(
                "INSERT INTO {} (backup_id, {columns}) SELECT {backup_id}, {columns} FROM {}",
                kind.backup_table(),
                kind.quoted_table()
            );
            txn.execute_unprepared(&statement)
                .await
                .during("copy a table into a backup")?;
        }
        txn.commit().await.during("commit a backup")?;
        info!(backup_id, %watermark, "backup taken");
        Ok(backup_id)
    }

    /// Replaces the data with backup `backup_id` (see the module docs).
    /// Emits no change events.
    #[instrument(skip_all, name = "monolith.restore", fields(backup_id))]
    pub async fn restore(&self, backup_id: BackupId) -> Result<RestoreOutcome> {
        let txn = db::begin_write(&self.connection).await?;
        lock_meta(&txn).await?;
        let current = read_meta(&txn).await?;
        let Some(snapshot) = backup::Entity::find_by_id(backup_id)
            .one(&txn)
            .await
            .during("read a backup")?
        else {
            return Err(Error::NotFound(format!("backup {backup_id}")));
        };
        let highest_backup_generation: Option<i64> = backup::Entity::find()
            .select_only()
            .column_as(backup::Column::Generation.max(), "highest")
            .into_tuple()
            .one(&txn)
            .await
            .during("read the highest backed-up generation")?
            .flatten();
        let highest_seen = current
            .generation
            .max(u64::try_from(highest_backup_generation.unwrap_or(0)).unwrap_or(0));
        let generation = highest_seen + 1;
        for index in self.model().deletion_order() {
            let kind = self.model().kind_at(*index);
            txn.execute_unprepared(&format!("DELETE FROM {}", kind.quoted_table()))
                .await
                .during("clear a table for a restore")?;
        }
        for index in self.model().insertion_order() {
            let kind = self.model().kind_at(index);
            let columns = copied_columns(kind);
            let statement = format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {} WHERE backup_id = {backup_id}",
                kind.quoted_table(),
                kind.backup_table()
            );
            txn.execute_unprepared(&statement)
                .await
                .during("copy a table back from a backup")?;
        }
        let (new_generation, _) = version_columns(Version::new(generation, 0))?;
        meta::Entity::update_many()
            .col_expr(meta::Column::Generation, Expr::val(new_generation))
            .col_expr(meta::Column::Sequence, Expr::val(snapshot.sequence))
            .filter(meta::Column::Id.eq(1))
            .exec(&txn)
            .await
            .during("set the restored counter and the new generation")?;
        let watermark = read_meta(&txn).await?;
        txn.commit().await.during("commit a restore")?;
        info!(backup_id, %watermark, "backup restored");
        Ok(RestoreOutcome {
            backup_id,
            generation,
            watermark,
        })
    }
}
