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

/// The rows of a multi-row write as PostgreSQL's `SELECT … FROM
/// unnest($1::text[], $2::bigint[], …) AS r(columns)`: one array parameter
/// per column instead of one parameter per value, so that the statement's
/// text, parse and plan do not grow with its rows (a `VALUES` list of 500
/// rows costs PostgreSQL about a third more per row, measured). `casts`
/// give a column's cast from its array's element type (a timestamp travels
/// as text). Each array travels as the text of an array literal: the
/// binder's arrays cannot hold NULL elements.
pub(crate) fn unnest_rows(
    binder: &mut Binder,
    columns: &[&str],
    rows: Vec<Vec<Value>>,
    casts: &[Option<&str>],
) -> Result<String> {
    let mut literals: Vec<String> = vec![String::from("{"); columns.len()];
    let mut element_types: Vec<Option<&str>> = vec![None; columns.len()];
    for (index, values) in rows.into_iter().enumerate() {
        for (column, value) in values.into_iter().enumerate() {
            let literal = literals.get_mut(column).ok_or_else(|| {
                Error::InvalidData(format!(
                    "a row has more values than the {} columns",
                    columns.len()
                ))
            })?;
            if index > 0 {
                literal.push(',');
            }
            let element_type = push_array_element(literal, value)?;
            element_types[column].get_or_insert(element_type);
        }
    }
    let mut arrays = Vec::with_capacity(columns.len());
    let mut selected = Vec::with_capacity(columns.len());
    for (column, (mut literal, element_type)) in literals.into_iter().zip(element_types).enumerate()
    {
        literal.push('}');
        let element_type = element_type.unwrap_or("text");
        arrays.push(format!(
            "CAST({} AS {element_type}[])",
            binder.bind(literal)
        ));
        let name = columns[column];
        selected.push(match casts.get(column).copied().flatten() {
            Some(cast) => format!("CAST(r.{name} AS {cast})"),
            None => format!("r.{name}"),
        });
    }
    Ok(format!(
        "SELECT {} FROM unnest({}) AS r({})",
        selected.join(", "),
        arrays.join(", "),
        columns.join(", ")
    ))
}

/// Appends `value` to an array literal as one element; returns the
/// element's PostgreSQL type.
fn push_array_element(literal: &mut String, value: Value) -> Result<&'static str> {
    let (element_type, text) = match value {
        Value::String(text) => ("text", text.map(|text| quoted_element(&text))),
        Value::BigInt(number) => ("bigint", number.map(|number| number.to_string())),
        Value::Bool(flag) => (
            "boolean",
            flag.map(|flag| if flag { "t" } else { "f" }.to_owned()),
        ),
        other => {
            return Err(Error::InvalidData(format!(
                "no array element form for the value {other:?}"
            )));
        }
    };
    literal.push_str(text.as_deref().unwrap_or("NULL"));
    Ok(element_type)
}

/// A text element of an array literal: in double quotes, with backslashes
/// and double quotes escaped (everything else is taken as it is).
fn quoted_element(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        if matches!(character, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(character);
    }
    quoted.push('"');
    quoted
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
