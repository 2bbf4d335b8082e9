//! Rows and changes of any declared kind as carried before they are checked
//! against a schema, and their bridge to checked [`Change`]s.
//!
//! A [`DeclaredRow`] is what an event or a page carries for a schema known
//! only at run time: the kind's name, the scope value, the key fields'
//! values in key order and the data fields' values in declaration order.
//! [`DeclaredRow::check`] holds it against its [`Schema`].

use super::{FieldValue, InvalidValue, KindDef, Schema};
use crate::id::{InvalidInput, validate_id};
use crate::{Change, Deletion, EntityKey, Kind, Record, Row, Version};

/// One row of a declared kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeclaredRow {
    /// The kind's singular name.
    pub kind: String,
    /// The scope value the row lives in (for a scope row: its own key).
    pub scope: String,
    /// The key fields' values, in key order.
    pub key: Vec<String>,
    /// The data fields' values, in declaration order.
    pub values: Vec<FieldValue>,
    /// The version of the change that produced the data.
    pub version: Version,
}

/// One change of a row of a declared kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeclaredChange {
    /// Create or update the row.
    Upsert(DeclaredRow),
    /// Delete the row; `values` is empty.
    Delete(DeclaredRow),
}

/// A declared row that does not fit its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRow {
    /// The kind is not declared.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// A key or scope value that is no valid id.
    #[error("kind {kind:?}: {source}")]
    Key {
        /// The kind.
        kind: String,
        /// What is wrong with the id.
        #[source]
        source: InvalidInput,
    },
    /// Not as many key or data values as the kind declares.
    #[error("kind {kind:?}: {what} has {found} values, the schema declares {declared}")]
    Arity {
        /// The kind.
        kind: String,
        /// `"the key"` or `"the data"`.
        what: &'static str,
        /// Values given.
        found: usize,
        /// Values declared.
        declared: usize,
    },
    /// A value that does not fit its field.
    #[error("kind {kind:?}: {source}")]
    Value {
        /// The kind.
        kind: String,
        /// What is wrong with the value.
        #[source]
        source: InvalidValue,
    },
    /// A key part other than the last holds `:`, which joins a composite
    /// key's parts in its cursor form.
    #[error(
        "kind {kind:?}: key field {field:?} value {value:?} contains `:`, which the cursor form forbids"
    )]
    CursorSeparator {
        /// The kind.
        kind: String,
        /// The key field.
        field: String,
        /// The value.
        value: String,
    },
    /// A scope row whose scope is not its own key.
    #[error("a {kind} row's scope {scope:?} is not its own key {key:?}")]
    ScopeRow {
        /// The scope kind.
        kind: String,
        /// The scope given.
        scope: String,
        /// The row's key.
        key: String,
    },
}

impl DeclaredRow {
    /// Checks the row against `schema`: a declared kind, valid ids for the
    /// scope and every key field, one value per data field that fits it
    /// (`data` is false for a deletion, which carries no data values).
    pub fn check(&self, schema: &Schema, data: bool) -> Result<(), InvalidRow> {
        let kind = self.definition(schema)?;
        crate::validate_tenant_id(&self.scope).map_err(|source| InvalidRow::Key {
            kind: kind.name.clone(),
            source,
        })?;
        kind.check_key(&self.key)?;
        if !kind.scoped && self.key.first() != Some(&self.scope) {
            return Err(InvalidRow::ScopeRow {
                kind: kind.name.clone(),
                scope: self.scope.clone(),
                key: self.key.join(":"),
            });
        }
        if data {
            kind.check_values(&self.values)
        } else {
            arity(&kind.name, "the data", self.values.len(), 0)
        }
    }

    /// The definition of the row's kind in `schema`.
    fn definition<'a>(&self, schema: &'a Schema) -> Result<&'a KindDef, InvalidRow> {
        schema
            .kind(&self.kind)
            .filter(|kind| kind.name == self.kind)
            .ok_or_else(|| InvalidRow::UnknownKind(self.kind.clone()))
    }
}

impl KindDef {
    /// Checks a key of this kind: one valid id per key field; only the
    /// last part may hold `:` (a composite key's cursor joins its parts
    /// with it).
    pub fn check_key(&self, key: &[String]) -> Result<(), InvalidRow> {
        arity(&self.name, "the key", key.len(), self.key.len())?;
        for (index, part) in key.iter().enumerate() {
            validate_id("key field", part).map_err(|source| InvalidRow::Key {
                kind: self.name.clone(),
                source,
            })?;
            if index + 1 < key.len() && part.contains(':') {
                return Err(InvalidRow::CursorSeparator {
                    kind: self.name.clone(),
                    field: self.key[index].clone(),
                    value: part.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks the data values of a row of this kind: one per data field, in
    /// declaration order, each fitting its field.
    pub fn check_values(&self, values: &[FieldValue]) -> Result<(), InvalidRow> {
        arity(&self.name, "the data", values.len(), self.fields.len())?;
        for (field, value) in self.fields.iter().zip(values) {
            field.check(value).map_err(|source| InvalidRow::Value {
                kind: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

fn arity(kind: &str, what: &'static str, found: usize, declared: usize) -> Result<(), InvalidRow> {
    if found == declared {
        return Ok(());
    }
    Err(InvalidRow::Arity {
        kind: kind.to_owned(),
        what,
        found,
        declared,
    })
}

impl DeclaredChange {
    /// The row (for a deletion: its key, scope and version).
    pub fn row(&self) -> &DeclaredRow {
        match self {
            DeclaredChange::Upsert(row) | DeclaredChange::Delete(row) => row,
        }
    }

    /// The declared form of a change.
    pub fn of_change(change: &Change) -> Self {
        match change {
            Change::Upsert(row) => DeclaredChange::Upsert(DeclaredRow {
                kind: row.kind().as_str().to_owned(),
                scope: row.tenant_id.clone(),
                key: row.record.key_ref().parts().to_vec(),
                values: row.record.values().to_vec(),
                version: row.version,
            }),
            Change::Delete(deletion) => DeclaredChange::Delete(DeclaredRow {
                kind: deletion.kind.as_str().to_owned(),
                scope: deletion.tenant_id.clone(),
                key: deletion.key.parts().to_vec(),
                values: Vec::new(),
                version: deletion.version,
            }),
        }
    }

    /// The change of a declared change, checked against `schema` first.
    pub fn to_change(self, schema: &'static Schema) -> Result<Change, InvalidRow> {
        let deletion = matches!(self, DeclaredChange::Delete(_));
        self.row().check(schema, !deletion)?;
        let (DeclaredChange::Upsert(row) | DeclaredChange::Delete(row)) = self;
        let definition = row.definition(schema)?;
        let key = EntityKey::from_parts(row.key);
        if deletion {
            return Ok(Change::Delete(Deletion {
                tenant_id: row.scope,
                kind: Kind::of(definition),
                key,
                version: row.version,
            }));
        }
        Ok(Change::Upsert(Row {
            tenant_id: row.scope,
            record: Record::unchecked(definition, key, row.values),
            version: row.version,
        }))
    }
}
