//! Inserting a generated batch of new rows of any kinds in one
//! transaction: one block of sequence numbers (one counter update), the
//! kinds in insertion order (parents first), multi-row `INSERT`s, and one
//! outbox event per row in sequence order. A row that already exists is a
//! conflict ([`crate::Error::Conflict`]).

use crate::Monolith;
use crate::db::{self, allocate_sequences};
use crate::error::{DbResultExt, Result};
use crate::events::{self, Operation};
use crate::model::KindPlan;
use crate::outbox::NewEvent;
use crate::rows::Rows;
use crate::sql::{self, row_placeholders, row_width};
use recon_core::Version;
use recon_core::schema::FieldValue;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Statement, Value};

/// Most rows per multi-row `INSERT`.
const INSERT_ROWS: usize = 500;
/// Most parameters per statement (under both backends' limits).
const INSERT_PARAMETERS: usize = 30_000;

/// New rows per kind, each with its scope value; versions are handed out
/// when they are inserted.
#[derive(Debug, Clone)]
pub(crate) struct NewRows {
    scopes: Vec<Vec<String>>,
    rows: Vec<Rows>,
}

impl NewRows {
    /// An empty batch for `monolith`'s kinds.
    pub(crate) fn new(monolith: &Monolith) -> NewRows {
        let kinds = monolith.model().kinds();
        NewRows {
            scopes: vec![Vec::new(); kinds.len()],
            rows: kinds
                .iter()
                .map(|kind| Rows::new(kind.key().len(), kind.fields().len(), 0))
                .collect(),
        }
    }

    /// Adds a row of kind `kind` (index) in `scope`.
    pub(crate) fn push(
        &mut self,
        kind: usize,
        scope: String,
        key: impl IntoIterator<Item = String>,
        values: impl IntoIterator<Item = FieldValue>,
    ) {
        self.scopes[kind].push(scope);
        self.rows[kind].push(key, values, Version::ZERO);
    }

    /// How many rows the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.rows.iter().map(Rows::len).sum()
    }
}

/// Inserts `batch` in one transaction (see the module docs).
pub(crate) async fn insert(monolith: &Monolith, batch: NewRows) -> Result<()> {
    let total = batch.len();
    if total == 0 {
        return Ok(());
    }
    let txn = db::begin_write(monolith.connection()).await?;
    let mut block = allocate_sequences(&txn, total as u64).await?;
    let mut events = Vec::with_capacity(total);
    let NewRows { scopes, mut rows } = batch;
    for index in monolith.model().insertion_order() {
        let kind = monolith.model().kind_at(index);
        let kind_rows = &mut rows[index];
        for row in 0..kind_rows.len() {
            kind_rows.set_version(row, block.next_version()?);
        }
        insert_kind(monolith, &txn, kind, &scopes[index], kind_rows).await?;
        for (row, scope) in scopes[index].iter().enumerate() {
            let view = kind_rows.row(scope, row);
            events.push(NewEvent {
                scope: view.scope.to_owned(),
                version: view.version,
                payload: events::payload(monolith.model(), kind, view, Operation::Upsert)?,
            });
        }
    }
    crate::outbox::append(&txn, events).await?;
    txn.commit().await.during("commit a seeding batch")
}

async fn insert_kind(
    monolith: &Monolith,
    txn: &DatabaseTransaction,
    kind: &KindPlan,
    scopes: &[String],
    rows: &Rows,
) -> Result<()> {
    let backend = monolith.backend();
    let width = row_width(kind);
    let per_statement = INSERT_ROWS.min(INSERT_PARAMETERS / width).max(1);
    let prefix = &monolith.statements[kind.index].insert_prefix;
    let mut first = 0;
    while first < rows.len() {
        let end = (first + per_statement).min(rows.len());
        let mut values: Vec<Value> = Vec::with_capacity((end - first) * width);
        let mut tuples = Vec::with_capacity(end - first);
        for (row, scope) in scopes.iter().enumerate().take(end).skip(first) {
            tuples.push(row_placeholders(kind, backend, values.len()));
            sql::bind_row(kind, backend, rows.row(scope, row), &mut values)?;
        }
        let statement = Statement::from_sql_and_values(
            backend,
            format!("{prefix}{}", tuples.join(", ")),
            values,
        );
        txn.execute_raw(statement)
            .await
            .during("insert a batch of rows")?;
        first = end;
    }
    Ok(())
}
