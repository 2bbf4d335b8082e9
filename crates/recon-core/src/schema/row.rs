//! Rows and changes of any declared kind, and their bridge to the default
//! schema's typed [`Record`]s.
//!
//! A [`DeclaredRow`] is what an event or a page carries for a schema known
//! only at run time: the kind's name, the scope value, the key fields'
//! values in key order and the data fields' values in declaration order.
//! [`DeclaredRow::check`] holds it against its [`Schema`].

use super::{FieldValue, InvalidValue, Schema};
use crate::domain::{InvalidInput, validate_id};
use crate::{
    Change, Deletion, EntityKey, Group, Membership, Record, Row, Tenant, User, UserStatus, Version,
};

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
        let kind = schema
            .kind(&self.kind)
            .filter(|kind| kind.name == self.kind)
            .ok_or_else(|| InvalidRow::UnknownKind(self.kind.clone()))?;
        let key_error = |source| InvalidRow::Key {
            kind: kind.name.clone(),
            source,
        };
        crate::validate_tenant_id(&self.scope).map_err(key_error)?;
        arity(&kind.name, "the key", self.key.len(), kind.key.len())?;
        for (index, part) in self.key.iter().enumerate() {
            validate_id("key field", part).map_err(key_error)?;
            // A composite key's cursor joins its parts with `:`; only the
            // last part may hold one.
            if index + 1 < self.key.len() && part.contains(':') {
                return Err(InvalidRow::CursorSeparator {
                    kind: kind.name.clone(),
                    field: kind.key[index].clone(),
                    value: part.clone(),
                });
            }
        }
        if !kind.scoped && self.key.first() != Some(&self.scope) {
            return Err(InvalidRow::ScopeRow {
                kind: kind.name.clone(),
                scope: self.scope.clone(),
                key: self.key.join(":"),
            });
        }
        let declared = if data { kind.fields.len() } else { 0 };
        arity(&kind.name, "the data", self.values.len(), declared)?;
        for (field, value) in kind.fields.iter().zip(&self.values) {
            field.check(value).map_err(|source| InvalidRow::Value {
                kind: kind.name.clone(),
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

    /// The declared form of a change of the default schema.
    pub fn of_change(change: &Change) -> Self {
        match change {
            Change::Upsert(row) => {
                let (key, values) = declared_parts(&row.record);
                DeclaredChange::Upsert(DeclaredRow {
                    kind: row.kind().as_str().to_owned(),
                    scope: row.tenant_id.clone(),
                    key,
                    values,
                    version: row.version,
                })
            }
            Change::Delete(deletion) => {
                let key = deletion.key.parts().to_vec();
                DeclaredChange::Delete(DeclaredRow {
                    kind: deletion.kind.as_str().to_owned(),
                    scope: deletion.tenant_id.clone(),
                    key,
                    values: Vec::new(),
                    version: deletion.version,
                })
            }
        }
    }

    /// The default schema's typed change of a declared change, which is
    /// checked against the default schema first.
    pub fn to_change(&self) -> Result<Change, InvalidRow> {
        let deletion = matches!(self, DeclaredChange::Delete(_));
        let row = self.row();
        row.check(Schema::default_schema(), !deletion)?;
        let kind = row
            .kind
            .parse()
            .map_err(|_| InvalidRow::UnknownKind(row.kind.clone()))?;
        if deletion {
            let key = EntityKey::from_parts(row.key.clone());
            return Ok(Change::Delete(Deletion {
                tenant_id: row.scope.clone(),
                kind,
                key,
                version: row.version,
            }));
        }
        let text = |index: usize| match &row.values[index] {
            FieldValue::Text(text) => text.clone(),
            _ => String::new(),
        };
        let id = || row.key[0].clone();
        let record = match kind {
            crate::Kind::TENANT => Record::Tenant(Tenant {
                id: id(),
                name: text(0),
            }),
            crate::Kind::USER => Record::User(User {
                id: id(),
                email: text(0),
                display_name: text(1),
                status: if text(2) == UserStatus::Active.as_str() {
                    UserStatus::Active
                } else {
                    UserStatus::Disabled
                },
            }),
            crate::Kind::GROUP => Record::Group(Group {
                id: id(),
                name: text(0),
            }),
            crate::Kind::MEMBERSHIP => Record::Membership(Membership {
                group_id: row.key[0].clone(),
                user_id: row.key[1].clone(),
            }),
            _ => return Err(InvalidRow::UnknownKind(row.kind.clone())),
        };
        Ok(Change::Upsert(Row {
            tenant_id: row.scope.clone(),
            record,
            version: row.version,
        }))
    }
}

/// The key and data values of a default-schema record, in declared order.
pub(crate) fn declared_parts(record: &Record) -> (Vec<String>, Vec<FieldValue>) {
    let text = |value: &str| FieldValue::Text(value.to_owned());
    match record {
        Record::Tenant(tenant) => (vec![tenant.id.clone()], vec![text(&tenant.name)]),
        Record::User(user) => (
            vec![user.id.clone()],
            vec![
                text(&user.email),
                text(&user.display_name),
                text(user.status.as_str()),
            ],
        ),
        Record::Group(group) => (vec![group.id.clone()], vec![text(&group.name)]),
        Record::Membership(membership) => (
            vec![membership.group_id.clone(), membership.user_id.clone()],
            Vec::new(),
        ),
    }
}
