//! The SQL of the generic data path: each kind's statements, built once
//! per backend when the monolith connects ([`KindSql`]), and the typed
//! binding and reading of field values.
//!
//! Parameters are numbered (`$1` on PostgreSQL, `?1` on SQLite), so a
//! statement may use one more than once. A `timestamp` travels as its
//! RFC 3339 text and is cast on PostgreSQL (exact to the microsecond,
//! where a float conversion is not), and is read back as microseconds
//! since the epoch; SQLite stores the microseconds themselves.

use crate::db::stored_version;
use crate::error::{DbResultExt, Error, Result};
use crate::model::{KindPlan, Model};
use crate::rows::Rows;
use recon_core::schema::{FieldDef, FieldType, FieldValue, SqlParameter};
use sea_orm::{DbBackend, QueryResult, Value};

/// Parameter number `number` (from 1) in `backend`'s syntax.
pub(crate) fn parameter(backend: DbBackend, number: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${number}"),
        _ => format!("?{number}"),
    }
}

/// A field's parameter as a value expression (a timestamp is cast from
/// its text on PostgreSQL).
pub(crate) fn value_parameter(field: &FieldDef, backend: DbBackend, number: usize) -> String {
    let parameter = parameter(backend, number);
    match (&field.field_type, backend) {
        (FieldType::Timestamp, DbBackend::Postgres) => format!("CAST({parameter} AS TIMESTAMPTZ)"),
        _ => parameter,
    }
}

/// A field's column as it is selected: a PostgreSQL timestamp as its
/// microseconds since the epoch.
pub(crate) fn selected_column(field: &FieldDef, backend: DbBackend, prefix: &str) -> String {
    let column = format!("{prefix}{}", field.name);
    match (&field.field_type, backend) {
        (FieldType::Timestamp, DbBackend::Postgres) => format!(
            "(extract(epoch FROM ({column} - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::bigint"
        ),
        _ => column,
    }
}

/// `(a, b) op (params…)` over `columns`, binding `key`'s parts.
pub(crate) fn key_condition(
    backend: DbBackend,
    columns: &[String],
    operator: &str,
    key: &[String],
    values: &mut Vec<Value>,
) -> String {
    let mut placeholders = Vec::with_capacity(columns.len());
    for part in key.iter().take(columns.len()) {
        values.push(part.clone().into());
        placeholders.push(parameter(backend, values.len()));
    }
    if columns.len() == 1 {
        return format!("{} {operator} {}", columns[0], placeholders[0]);
    }
    format!(
        "({}) {operator} ({})",
        columns.join(", "),
        placeholders.join(", ")
    )
}

/// One kind's statements on one backend, built once.
#[derive(Debug, Clone)]
pub(crate) struct KindSql {
    /// The key, data (timestamps converted), `generation` and `sequence`
    /// columns, as read into [`Rows`] by [`read_row`].
    pub select_list: String,
    /// The primary-key columns, comma-separated.
    pub primary_key: String,
    /// The key columns, comma-separated (the order of every page).
    pub key_list: String,
    /// `INSERT … ON CONFLICT DO UPDATE` of one row: scope (scoped kinds),
    /// key, data, generation, sequence as parameters `1..`.
    pub upsert: String,
    /// `SELECT 1` of one row by primary key (parameters `1..`).
    pub exists: String,
    /// `DELETE` of one row by primary key (parameters `1..`).
    pub delete: String,
    /// `INSERT INTO t (columns) VALUES ` (rows of [`row_placeholders`]
    /// follow).
    pub insert_prefix: String,
}

impl KindSql {
    /// The statements of `kind` on `backend`.
    pub(crate) fn new(kind: &KindPlan, backend: DbBackend) -> KindSql {
        let primary_key = kind.primary_key();
        let mut columns: Vec<String> = primary_key.iter().map(|c| (*c).to_owned()).collect();
        columns.extend(kind.fields().iter().map(|field| field.name.clone()));
        columns.push("generation".to_owned());
        columns.push("sequence".to_owned());
        let insert_prefix = format!(
            "INSERT INTO {} ({}) VALUES ",
            kind.quoted_table(),
            columns.join(", ")
        );
        let row = row_placeholders(kind, backend, 0);
        let mut updates: Vec<String> = kind
            .fields()
            .iter()
            .map(|field| format!("{0} = excluded.{0}", field.name))
            .collect();
        updates.push("generation = excluded.generation".to_owned());
        updates.push("sequence = excluded.sequence".to_owned());
        let upsert = format!(
            "{insert_prefix}{row} ON CONFLICT ({}) DO UPDATE SET {}",
            primary_key.join(", "),
            updates.join(", ")
        );
        let conditions: Vec<String> = primary_key
            .iter()
            .enumerate()
            .map(|(index, column)| format!("{column} = {}", parameter(backend, index + 1)))
            .collect();
        let exists = format!(
            "SELECT 1 AS found FROM {} WHERE {}",
            kind.quoted_table(),
            conditions.join(" AND ")
        );
        let delete = format!(
            "DELETE FROM {} WHERE {}",
            kind.quoted_table(),
            conditions.join(" AND ")
        );
        KindSql {
            select_list: select_list(kind, backend, ""),
            primary_key: primary_key.join(", "),
            key_list: kind.key().join(", "),
            upsert,
            exists,
            delete,
            insert_prefix,
        }
    }

    /// The statements of every kind of `model`, in file order.
    pub(crate) fn of_model(model: &Model, backend: DbBackend) -> Vec<KindSql> {
        model
            .kinds()
            .iter()
            .map(|kind| KindSql::new(kind, backend))
            .collect()
    }
}

fn select_list(kind: &KindPlan, backend: DbBackend, prefix: &str) -> String {
    let mut columns: Vec<String> = kind
        .key()
        .iter()
        .map(|key| format!("{prefix}{key}"))
        .collect();
    columns.extend(
        kind.fields()
            .iter()
            .map(|field| selected_column(field, backend, prefix)),
    );
    columns.push(format!("{prefix}generation"));
    columns.push(format!("{prefix}sequence"));
    columns.join(", ")
}

/// The parameters of one row of a multi-row insert, numbered after
/// `before` parameters: `(scope?, key…, data…, generation, sequence)`.
pub(crate) fn row_placeholders(kind: &KindPlan, backend: DbBackend, before: usize) -> String {
    let mut number = before;
    let mut next = || {
        number += 1;
        number
    };
    let mut placeholders = Vec::with_capacity(kind.key().len() + kind.fields().len() + 3);
    if kind.scoped() {
        placeholders.push(parameter(backend, next()));
    }
    for _ in kind.key() {
        placeholders.push(parameter(backend, next()));
    }
    for field in kind.fields() {
        placeholders.push(value_parameter(field, backend, next()));
    }
    placeholders.push(parameter(backend, next()));
    placeholders.push(parameter(backend, next()));
    format!("({})", placeholders.join(", "))
}

/// How many parameters one row of `kind` binds.
pub(crate) fn row_width(kind: &KindPlan) -> usize {
    usize::from(kind.scoped()) + kind.key().len() + kind.fields().len() + 2
}

/// Binds one row's parameters in [`row_placeholders`] order.
pub(crate) fn bind_row(
    kind: &KindPlan,
    backend: DbBackend,
    row: crate::rows::RowRef<'_>,
    values: &mut Vec<Value>,
) -> Result<()> {
    if kind.scoped() {
        values.push(row.scope.to_owned().into());
    }
    values.extend(row.key.iter().map(|part| Value::from(part.clone())));
    for (field, value) in kind.fields().iter().zip(row.values) {
        values.push(bind_value(field, value, backend)?);
    }
    let (generation, sequence) = crate::db::version_columns(row.version)?;
    values.push(generation.into());
    values.push(sequence.into());
    Ok(())
}

/// A field value as a parameter of its column's type (a NULL typed too:
/// PostgreSQL refuses a text NULL for a BIGINT column).
pub(crate) fn bind_value(
    field: &FieldDef,
    value: &FieldValue,
    backend: DbBackend,
) -> Result<Value> {
    let parameter = field
        .sql_parameter(value, backend == DbBackend::Postgres)
        .map_err(|invalid| Error::BadRequest(invalid.to_string()))?;
    Ok(match parameter {
        SqlParameter::Text(text) => text.into(),
        SqlParameter::BigInt(number) => number.into(),
        SqlParameter::Boolean(flag) => flag.into(),
    })
}

/// Reads one row selected with [`KindSql::select_list`], starting at
/// column `first`, into `rows`.
pub(crate) fn read_row(
    kind: &KindPlan,
    result: &QueryResult,
    first: usize,
    rows: &mut Rows,
) -> Result<()> {
    let action = "read a row";
    let mut column = first;
    for _ in kind.key() {
        rows.push_key_part(result.try_get_by_index(column).during(action)?);
        column += 1;
    }
    for field in kind.fields() {
        rows.push_value(read_value(field, result, column)?);
        column += 1;
    }
    let generation: i64 = result.try_get_by_index(column).during(action)?;
    let sequence: i64 = result.try_get_by_index(column + 1).during(action)?;
    rows.finish_row(stored_version(generation, sequence)?);
    Ok(())
}

fn read_value(field: &FieldDef, result: &QueryResult, column: usize) -> Result<FieldValue> {
    let action = "read a field";
    let value = match field.field_type {
        FieldType::Text { .. } | FieldType::Enum { .. } => result
            .try_get_by_index::<Option<String>>(column)
            .during(action)?
            .map(FieldValue::Text),
        FieldType::Json => result
            .try_get_by_index::<Option<String>>(column)
            .during(action)?
            .map(FieldValue::Json),
        FieldType::Integer => result
            .try_get_by_index::<Option<i64>>(column)
            .during(action)?
            .map(FieldValue::Integer),
        FieldType::Timestamp => result
            .try_get_by_index::<Option<i64>>(column)
            .during(action)?
            .map(FieldValue::Timestamp),
        FieldType::Boolean => result
            .try_get_by_index::<Option<bool>>(column)
            .during(action)?
            .map(FieldValue::Boolean),
    };
    Ok(value.unwrap_or(FieldValue::Null))
}
