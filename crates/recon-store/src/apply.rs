//! The one apply path, shared by Kafka events and reconciliation.
//!
//! A batch is written in one transaction: changes are de-duplicated per
//! entity (the newest version wins), grouped by kind in upsert order
//! (tenants first), and each group becomes one multi-row
//! `INSERT … ON CONFLICT DO UPDATE` in which upserts and tombstones travel
//! together. The two [`WriteMode`]s differ only in the guard:
//!
//! * event form: `DO UPDATE … WHERE (stored version) < (incoming version)`,
//!   and changes below the generation floor are dropped before writing;
//! * reconciliation form: `DO UPDATE … WHERE (stored version) <= (the
//!   page's watermark)` — the source's data replaces whatever is not newer
//!   than the snapshot it was read in (also a restore's older versions),
//!   and a stored version newer than the watermark (an event newer than the
//!   snapshot already landed) is kept and counted; the fence is checked and
//!   raised first, in the same transaction.
//!
//! Applying a batch twice has no further effect in either form, so a batch
//! interrupted half-way (the transaction rolls back) is safe to retry.
//!
//! On PostgreSQL a reconciliation batch first names its scope and epoch in
//! transaction-local settings (`recon.write_scope`, `recon.write_epoch`),
//! apart from the fence check, so that a trigger on a data table can tell
//! which epoch wrote a row (recon-chaos's fencing audit reads them there).

use crate::fence::{self, FenceToken};
use crate::sql::{self, Binder};
use crate::tables::{Table, Tables};
use crate::{Error, Result, Store, error::database};
use recon_core::{Change, Kind, Version};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, TransactionTrait, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::instrument;

/// Most rows in one statement (keeps bound parameters far below the limits
/// of both backends).
const ROWS_PER_STATEMENT: usize = 500;

/// Which of the two forms of the apply path a batch uses (DESIGN §3).
#[derive(Debug, Clone, Copy)]
pub enum WriteMode<'a> {
    /// Kafka events: version-guarded, subject to the generation floor.
    Event,
    /// Reconciliation: authoritative up to the watermark of the source page
    /// the changes were read in, fenced by the plan's epoch.
    Reconcile(&'a FenceToken, Version),
}

impl WriteMode<'_> {
    fn name(&self) -> &'static str {
        match self {
            WriteMode::Event => "event",
            WriteMode::Reconcile(..) => "reconcile",
        }
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Rows inserted or updated (upserts and tombstones).
    pub written: u64,
    /// Event-form changes not newer than the stored version (including
    /// older duplicates within the batch).
    pub skipped_stale: u64,
    /// Event-form changes whose generation is below the floor.
    pub skipped_below_floor: u64,
    /// Reconciliation-form changes not written because the stored version
    /// was newer than the page's watermark.
    pub kept_newer: u64,
}

impl ApplyOutcome {
    /// Adds another outcome's counts to this one.
    pub fn add(&mut self, other: ApplyOutcome) {
        self.written += other.written;
        self.skipped_stale += other.skipped_stale;
        self.skipped_below_floor += other.skipped_below_floor;
        self.kept_newer += other.kept_newer;
    }
}

/// Identity of an entity across kinds and tenants, for de-duplication.
type EntityId = (Kind, String, recon_core::EntityKey);

impl Store {
    /// Applies a batch of changes in one transaction through the one apply
    /// path, in the given form. Returns what was written and skipped; fails
    /// with [`Error::StaleEpoch`] (nothing written) when a reconciliation
    /// batch is fenced off.
    #[instrument(name = "store.apply_batch", skip_all, fields(changes = changes.len(), mode = mode.name()))]
    pub async fn apply(&self, changes: &[Change], mode: WriteMode<'_>) -> Result<ApplyOutcome> {
        for change in changes {
            validate(&self.tables, change)?;
        }
        let transaction = self.connection.begin().await.map_err(database("begin"))?;
        take_write_lock(&transaction).await?;
        let mut outcome = ApplyOutcome::default();
        let selected = match mode {
            WriteMode::Reconcile(token, _) => {
                name_write_epoch(&transaction, token).await?;
                fence::check_and_raise(&transaction, token).await?;
                newest_per_entity(changes.iter())
            }
            WriteMode::Event => {
                let floors = fence::floors_for(&transaction, changes).await?;
                let above_floor = changes.iter().filter(|change| {
                    change.version().generation >= floors.floor_for(change.tenant_id())
                });
                let selected = newest_per_entity(above_floor.clone());
                outcome.skipped_below_floor = (changes.len() - above_floor.count()) as u64;
                selected
            }
        };
        let guard = match mode {
            WriteMode::Event => VersionGuard::Newer,
            WriteMode::Reconcile(_, watermark) => VersionGuard::AtMost(watermark),
        };
        let deleted_at_ms = now_ms();
        let scope = Kind::of(self.tables.schema().scope());
        let backend = self.backend();
        for kind in self.tables.upsert_order() {
            let table = self.tables.table(kind)?;
            let of_kind: Vec<&Change> = selected
                .values()
                .copied()
                .filter(|c| c.kind() == kind)
                .collect();
            for chunk in of_kind.chunks(ROWS_PER_STATEMENT) {
                outcome.written +=
                    write_chunk(&transaction, table, backend, chunk, guard, deleted_at_ms).await?;
            }
        }
        // Changes that landed; the cascades below write other rows.
        let landed = outcome.written;
        for change in selected.values() {
            if let Change::Delete(deletion) = change
                && deletion.kind == scope
            {
                outcome.written += cascade_tenant_delete(
                    &transaction,
                    &self.tables,
                    &deletion.tenant_id,
                    deletion.version,
                    guard,
                    deleted_at_ms,
                )
                .await?;
            }
        }
        transaction
            .commit()
            .await
            .map_err(database("commit batch"))?;
        match guard {
            VersionGuard::Newer => {
                let considered = changes.len() as u64 - outcome.skipped_below_floor;
                outcome.skipped_stale = considered.saturating_sub(landed);
            }
            VersionGuard::AtMost(_) => {
                outcome.kept_newer = (selected.len() as u64).saturating_sub(landed);
            }
        }
        Ok(outcome)
    }

    /// Applies Kafka events (event form). Shorthand for
    /// `apply(changes, WriteMode::Event)`.
    pub async fn apply_events(&self, changes: &[Change]) -> Result<ApplyOutcome> {
        self.apply(changes, WriteMode::Event).await
    }

    /// Applies reconciliation writes read at `watermark` under `fence`
    /// (reconciliation form).
    pub async fn apply_reconciliation(
        &self,
        fence: &FenceToken,
        watermark: Version,
        changes: &[Change],
    ) -> Result<ApplyOutcome> {
        self.apply(changes, WriteMode::Reconcile(fence, watermark))
            .await
    }
}

/// Refuses a change the store cannot hold: a kind its schema does not
/// declare, a record of another schema's definition of the kind, a scope
/// row filed under another scope.
fn validate(tables: &Tables, change: &Change) -> Result<()> {
    let definition = tables.definition(change.kind())?;
    let scope = tables.schema().scope();
    if let Change::Upsert(row) = change {
        let held = row.record.definition();
        if !std::ptr::eq(held, definition) && held != definition {
            return Err(Error::InvalidData(format!(
                "a {} row of another schema than the store's",
                definition.name
            )));
        }
    }
    if definition.name == scope.name && change.key().first() != change.tenant_id() {
        return Err(Error::InvalidData(format!(
            "{} row {:?} filed under {} {:?}",
            scope.name,
            change.key().first(),
            scope.name,
            change.tenant_id()
        )));
    }
    Ok(())
}

/// SQLite upgrades a read transaction to a write one lazily and fails with
/// "database is locked" if another writer got there first; writing first
/// takes the lock up front and lets the busy timeout queue writers instead.
async fn take_write_lock(transaction: &DatabaseTransaction) -> Result<()> {
    if transaction.get_database_backend() == DbBackend::Sqlite {
        transaction
            .execute_unprepared("UPDATE fences SET epoch = epoch WHERE 1 = 0")
            .await
            .map_err(database("take write lock"))?;
    }
    Ok(())
}

/// Names the batch's scope and epoch in settings local to its transaction
/// (PostgreSQL only), for triggers on the data tables.
async fn name_write_epoch(transaction: &DatabaseTransaction, token: &FenceToken) -> Result<()> {
    let backend = transaction.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(());
    }
    let mut binder = Binder::new(backend);
    let settings = format!(
        "SELECT set_config('recon.write_scope', {}, true), set_config('recon.write_epoch', {}, true)",
        binder.bind(token.scope.clone()),
        binder.bind(token.epoch.to_string())
    );
    transaction
        .execute_raw(binder.statement(settings))
        .await
        .map_err(database("name the write's epoch"))?;
    Ok(())
}

/// Keeps, per entity, the change with the highest version (the later one on
/// equal versions), in a deterministic order.
fn newest_per_entity<'a>(
    changes: impl Iterator<Item = &'a Change>,
) -> BTreeMap<EntityId, &'a Change> {
    let mut newest: BTreeMap<EntityId, &Change> = BTreeMap::new();
    for change in changes {
        let id = (change.kind(), change.tenant_id().to_owned(), change.key());
        match newest.get(&id) {
            Some(existing) if existing.version() > change.version() => {}
            _ => {
                newest.insert(id, change);
            }
        }
    }
    newest
}

/// Which stored rows a write may replace.
#[derive(Debug, Clone, Copy)]
enum VersionGuard {
    /// Event form: rows older than the incoming version.
    Newer,
    /// Reconciliation form: rows not newer than the page's watermark.
    AtMost(Version),
}

async fn write_chunk(
    transaction: &DatabaseTransaction,
    table: &Table,
    backend: DbBackend,
    changes: &[&Change],
    version_guard: VersionGuard,
    deleted_at_ms: i64,
) -> Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let mut binder = Binder::new(backend);
    let mut casts: Vec<Option<&str>> = vec![None; table.primary_key().len()];
    casts.extend(
        table
            .fields
            .iter()
            .map(|field| sql::column_cast(field, backend)),
    );
    let mut tuples = Vec::with_capacity(changes.len());
    for change in changes {
        let values = row_values(table, backend, change, deleted_at_ms)?;
        tuples.push(binder.bind_tuple_cast(values, &casts));
    }
    let mut columns = table.primary_key();
    columns.extend(table.data_columns.iter().map(String::as_str));
    columns.extend_from_slice(&["generation", "sequence", "deleted", "deleted_at_ms"]);
    let key_columns = table.primary_key();
    let updates: Vec<String> = columns
        .iter()
        .filter(|column| !key_columns.contains(column))
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    let guard = match version_guard {
        VersionGuard::Newer => format!(
            " WHERE ({name}.generation, {name}.sequence) < (excluded.generation, excluded.sequence)",
            name = table.name
        ),
        VersionGuard::AtMost(watermark) => {
            let [generation, sequence] = sql::version_values(watermark)?;
            format!(
                " WHERE ({name}.generation, {name}.sequence) <= ({}, {})",
                binder.bind(generation),
                binder.bind(sequence),
                name = table.name
            )
        }
    };
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}{guard}",
        table.name,
        columns.join(", "),
        tuples.join(", "),
        key_columns.join(", "),
        updates.join(", ")
    );
    let result = transaction
        .execute_raw(binder.statement(sql))
        .await
        .map_err(database("apply batch"))?;
    Ok(result.rows_affected())
}

/// Column values of one change, in the order of `write_chunk`'s columns.
fn row_values(
    table: &Table,
    backend: DbBackend,
    change: &Change,
    deleted_at_ms: i64,
) -> Result<Vec<Value>> {
    let key = change.key();
    let mut values: Vec<Value> = Vec::with_capacity(10);
    if table.tenant_scoped {
        values.push(change.tenant_id().to_owned().into());
    }
    values.extend(key.parts().iter().map(|part| Value::from(part.clone())));
    match change {
        Change::Upsert(row) => {
            for (field, value) in table.fields.iter().zip(row.record.values()) {
                values.push(sql::bind_value(field, value, backend)?);
            }
            values.extend(sql::version_values(row.version)?);
            values.push(false.into());
            values.push(Value::BigInt(None));
        }
        Change::Delete(deletion) => {
            for (index, field) in table.fields.iter().enumerate() {
                values.push(sql::bind_value(field, &table.placeholder(index), backend)?);
            }
            values.extend(sql::version_values(deletion.version)?);
            values.push(true.into());
            values.push(deleted_at_ms.into());
        }
    }
    Ok(values)
}

/// Deleting a tenant tombstones its live rows at the deletion's version
/// (event form: only rows older than the deletion; reconciliation form:
/// rows not newer than the page's watermark).
async fn cascade_tenant_delete(
    transaction: &DatabaseTransaction,
    tables: &Tables,
    tenant_id: &str,
    version: Version,
    version_guard: VersionGuard,
    deleted_at_ms: i64,
) -> Result<u64> {
    let mut written = 0;
    for table in tables.scoped().rev() {
        let mut binder = Binder::new(transaction.get_database_backend());
        let [generation, sequence] = sql::version_values(version)?;
        let set = format!(
            "deleted = {}, deleted_at_ms = {}, generation = {}, sequence = {}",
            binder.bind(true),
            binder.bind(deleted_at_ms),
            binder.bind(generation.clone()),
            binder.bind(sequence.clone())
        );
        let mut condition = format!(
            "{} = {} AND deleted = {}",
            table.scope_column,
            binder.bind(tenant_id),
            binder.bind(false)
        );
        let (operator, [bound_generation, bound_sequence]) = match version_guard {
            VersionGuard::Newer => ("<", [generation, sequence]),
            VersionGuard::AtMost(watermark) => ("<=", sql::version_values(watermark)?),
        };
        condition.push_str(&format!(
            " AND (generation, sequence) {operator} ({}, {})",
            binder.bind(bound_generation),
            binder.bind(bound_sequence)
        ));
        let sql = format!("UPDATE {} SET {set} WHERE {condition}", table.name);
        let result = transaction
            .execute_raw(binder.statement(sql))
            .await
            .map_err(database("cascade tenant delete"))?;
        written += result.rows_affected();
    }
    Ok(written)
}

fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}
