//! Small helpers to build backend-neutral SQL with bound values.

use crate::{Error, Result};
use recon_core::Version;
use recon_core::schema::{FieldDef, FieldType, FieldValue, SqlParameter};
use sea_orm::{DbBackend, Statement, Value};

/// Accumulates bound values and renders placeholders in the backend's
/// syntax (`$n` for PostgreSQL, `?` for SQLite).
pub(crate) struct Binder {
    backend: DbBackend,
    values: Vec<Value>,
}

impl Binder {
    /// An empty binder for `backend`.
    pub fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    /// Binds a value and returns its placeholder.
    pub fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_owned(),
        }
    }

    /// Binds several values and returns `(p1, p2, …)`.
    pub fn bind_tuple(&mut self, values: impl IntoIterator<Item = Value>) -> String {
        self.bind_tuple_cast(values, &[])
    }

    /// [`Binder::bind_tuple`] with the `i`th placeholder cast to `casts[i]`
    /// where one is given (`CAST(p AS type)`).
    pub fn bind_tuple_cast(
        &mut self,
        values: impl IntoIterator<Item = Value>,
        casts: &[Option<&str>],
    ) -> String {
        let placeholders: Vec<String> = values
            .into_iter()
            .enumerate()
            .map(|(index, value)| {
                let placeholder = self.bind(value);
                match casts.get(index).copied().flatten() {
                    Some(cast) => format!("CAST({placeholder} AS {cast})"),
                    None => placeholder,
                }
            })
            .collect();
        format!("({})", placeholders.join(", "))
    }

    /// Finishes into a statement.
    pub fn statement(self, sql: String) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, self.values)
    }
}

/// A version component as stored (BIGINT).
pub(crate) fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidData(format!("{what} {value} exceeds i64")))
}

/// A stored BIGINT back to a version component.
pub(crate) fn from_db(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| Error::InvalidData(format!("stored {what} {value} is negative")))
}

/// The two stored columns of a version.
pub(crate) fn version_values(version: Version) -> Result<[Value; 2]> {
    Ok([
        to_db(version.generation, "generation")?.into(),
        to_db(version.sequence, "sequence")?.into(),
    ])
}

/// A data value as a parameter of its column's type (a NULL typed too:
/// PostgreSQL refuses a text NULL for a BIGINT column). A timestamp travels
/// as RFC 3339 text on PostgreSQL (its placeholder is cast, see
/// [`column_cast`]; exact to the microsecond) and as microseconds on
/// SQLite.
pub(crate) fn bind_value(
    field: &FieldDef,
    value: &FieldValue,
    backend: DbBackend,
) -> Result<Value> {
    let parameter = field
        .sql_parameter(value, backend == DbBackend::Postgres)
        .map_err(|invalid| Error::InvalidData(invalid.to_string()))?;
    Ok(match parameter {
        SqlParameter::Text(text) => text.into(),
        SqlParameter::BigInt(number) => number.into(),
        SqlParameter::Boolean(flag) => flag.into(),
    })
}

/// The cast a data column's placeholder needs (a timestamp's text on
/// PostgreSQL), if any.
pub(crate) fn column_cast(field: &FieldDef, backend: DbBackend) -> Option<&'static str> {
    (field.field_type == FieldType::Timestamp && backend == DbBackend::Postgres)
        .then_some("TIMESTAMPTZ")
}
