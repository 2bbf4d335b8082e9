//! An independent check that a replica holds exactly the monolith's rows.
//!
//! Reads both databases with plain SQL — the monolith's own tables and the
//! replica store's live rows (the schema's tables, tombstones excluded) —
//! and compares every field and version, each row as one line of text
//! built in SQL the same way on both sides. It shares no code with recon's diff or
//! store, so a bug there cannot hide here. The demo ends with it and the
//! integration tests use it.

use crate::model::{KindPlan, Model};
use recon_core::schema::{FieldDef, FieldType, Schema};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use std::collections::BTreeSet;

/// The SQL text of one data field in a row's line: non-null text as
/// itself (the lines of the default schema are the ones this check always
/// wrote), NULL as `NULL` and a nullable field's text after `v:` (so that
/// NULL and the text "NULL" differ), numbers and microseconds in decimal,
/// booleans as `true`/`false` — the same text from either backend.
fn field_text(field: &FieldDef, backend: DbBackend) -> String {
    let column = &field.name;
    let value = match (&field.field_type, backend) {
        (FieldType::Text { .. } | FieldType::Enum { .. } | FieldType::Json, _) => column.clone(),
        (FieldType::Integer, _) => format!("CAST({column} AS TEXT)"),
        (FieldType::Boolean, _) => format!("CASE WHEN {column} THEN 'true' ELSE 'false' END"),
        (FieldType::Timestamp, DbBackend::Postgres) => format!(
            "CAST((extract(epoch FROM ({column} - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::bigint AS TEXT)"
        ),
        (FieldType::Timestamp, _) => format!("CAST({column} AS TEXT)"),
    };
    if field.nullable {
        format!("CASE WHEN {column} IS NULL THEN 'NULL' ELSE 'v:' || {value} END")
    } else {
        value
    }
}

/// `SELECT <line> AS line FROM <table>`: scope, key, data, version
/// joined by `|`.
fn lines_query(kind: &KindPlan, table: &str, backend: DbBackend, live_only: bool) -> String {
    let mut parts: Vec<String> = kind
        .primary_key()
        .iter()
        .map(|column| (*column).to_owned())
        .collect();
    parts.extend(kind.fields().iter().map(|field| field_text(field, backend)));
    parts.push("generation || '.' || sequence".to_owned());
    let filter = if live_only { " WHERE NOT deleted" } else { "" };
    format!(
        "SELECT {} AS line FROM {table}{filter}",
        parts.join(" || '|' || ")
    )
}

/// What differs between the two databases; empty when they are equal.
#[derive(Debug, Default)]
pub struct Differences {
    /// Rows compared on the monolith's side.
    pub monolith_rows: usize,
    /// Live rows compared on the replica's side.
    pub replica_rows: usize,
    /// `kind|fields…` lines only the monolith has (missing or outdated in
    /// the replica), at most 20.
    pub only_in_monolith: Vec<String>,
    /// Lines only the replica has (phantoms or wrong data), at most 20.
    pub only_in_replica: Vec<String>,
    /// How many lines differ in all.
    pub total: usize,
}

impl Differences {
    /// True when both sides hold exactly the same rows.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Compares the monolith database at `monolith_url` with the replica store
/// at `replica_url`, row by row, versions included (default schema).
pub async fn compare_databases(
    monolith_url: &str,
    replica_url: &str,
) -> Result<Differences, DbErr> {
    compare_schema_databases(Schema::default_schema(), monolith_url, replica_url).await
}

/// Compares the databases of a monolith and a replica store of `schema`:
/// each kind's monolith table with its replica table (the schema's
/// `table`, live rows only), row by row, versions included.
pub async fn compare_schema_databases(
    schema: &Schema,
    monolith_url: &str,
    replica_url: &str,
) -> Result<Differences, DbErr> {
    let model = Model::new(schema.clone()).map_err(|error| DbErr::Custom(error.to_string()))?;
    let monolith = Database::connect(monolith_url).await?;
    let replica = Database::connect(replica_url).await?;
    let mut differences = Differences::default();
    for kind in model.kinds() {
        let monolith_query = lines_query(
            kind,
            &kind.quoted_table(),
            monolith.get_database_backend(),
            false,
        );
        let replica_query =
            lines_query(kind, &kind.def.table, replica.get_database_backend(), true);
        let truth = lines(&monolith, kind.name(), &monolith_query).await?;
        let copy = lines(&replica, kind.name(), &replica_query).await?;
        differences.monolith_rows += truth.len();
        differences.replica_rows += copy.len();
        for line in truth.difference(&copy) {
            differences.total += 1;
            if differences.only_in_monolith.len() < 20 {
                differences.only_in_monolith.push(line.clone());
            }
        }
        for line in copy.difference(&truth) {
            differences.total += 1;
            if differences.only_in_replica.len() < 20 {
                differences.only_in_replica.push(line.clone());
            }
        }
    }
    monolith.close().await.ok();
    replica.close().await.ok();
    Ok(differences)
}

async fn lines(
    connection: &DatabaseConnection,
    kind: &str,
    query: &str,
) -> Result<BTreeSet<String>, DbErr> {
    let statement = Statement::from_string(connection.get_database_backend(), query.to_owned());
    let rows = connection.query_all_raw(statement).await?;
    let mut lines = BTreeSet::new();
    for row in rows {
        let line: String = row.try_get("", "line")?;
        lines.insert(format!("{kind}|{line}"));
    }
    Ok(lines)
}
