//! Small helpers to build backend-neutral SQL with bound values.

use crate::{Error, Result};
use recon_core::{Record, Version};
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
        let placeholders: Vec<String> = values.into_iter().map(|value| self.bind(value)).collect();
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

/// The data column values of a record, in the table's `data_columns` order.
pub(crate) fn data_values(record: &Record) -> Vec<Value> {
    match record {
        Record::Tenant(tenant) => vec![tenant.name.clone().into()],
        Record::User(user) => vec![
            user.email.clone().into(),
            user.display_name.clone().into(),
            user.status.as_str().into(),
        ],
        Record::Group(group) => vec![group.name.clone().into()],
        Record::Membership(_) => Vec::new(),
    }
}
