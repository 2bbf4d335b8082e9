//! Schema evolution: what changed between the schema a store or a monolith
//! was built with and the one it is asked to run, and whether a running
//! system can take it (`docs/schema.md`, evolution).
//!
//! Accepted: a kind added at the end of the file, a nullable field added at
//! the end of a kind's fields, enum values added, a text's `max_length`
//! raised or dropped, references and plurals changed (they steer the apply
//! order and the URLs, not what is stored). Everything else that changes
//! what is stored or how it is encoded is refused, each change named with
//! what to do instead.

use super::{FieldDef, FieldType, KindDef, Schema};

/// A change a running system can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// A new kind (its table is created).
    AddKind(KindDef),
    /// A new nullable field of an existing kind (its column is added; the
    /// kind's element now encodes it, so its digests are computed again).
    AddField {
        /// The kind's name.
        kind: String,
        /// The kind's table.
        table: String,
        /// The new field.
        field: FieldDef,
    },
}

/// A change refused: what changed and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{change}: {advice}")]
pub struct RefusedChange {
    /// What changed, e.g. `kind "user": field "email" removed`.
    pub change: String,
    /// What to do instead.
    pub advice: &'static str,
}

/// Every change refused between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RefusedChanges(pub Vec<RefusedChange>);

impl std::fmt::Display for RefusedChanges {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "the schema cannot change this way:")?;
        for refused in &self.0 {
            write!(formatter, "\n  - {refused}")?;
        }
        Ok(())
    }
}

const NEW_KIND_INSTEAD: &str =
    "keep the old kind as it was and declare a new kind (at the end of the file) for the new shape";
const NEW_FIELD_INSTEAD: &str =
    "keep the old field and add a new nullable field at the end of the kind's fields";

/// The changes from `old` to `new`, in the order to apply them; refused if
/// any change is not one a running system can take.
pub fn compare(old: &Schema, new: &Schema) -> Result<Vec<SchemaChange>, RefusedChanges> {
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut refuse = |change: String, advice: &'static str| {
        refused.push(RefusedChange { change, advice });
    };
    if old.scope().name != new.scope().name {
        refuse(
            format!(
                "the scope kind changed from {:?} to {:?}",
                old.scope().name,
                new.scope().name
            ),
            "a new scope is a new data model: replicate it into a new store",
        );
    }
    for (index, old_kind) in old.kinds().iter().enumerate() {
        match new.kinds().get(index) {
            Some(new_kind) if new_kind.name == old_kind.name => {
                compare_kind(old_kind, new_kind, &mut refuse, &mut accepted);
            }
            _ => {
                let moved = new.kinds().iter().any(|kind| kind.name == old_kind.name);
                let what = if moved { "moved" } else { "removed or renamed" };
                refuse(
                    format!("kind {:?} {what}", old_kind.name),
                    "kinds keep their place in the file (their position is their digest tag); add new kinds at the end",
                );
            }
        }
    }
    for kind in new.kinds().iter().skip(old.kinds().len()) {
        accepted.push(SchemaChange::AddKind(kind.clone()));
    }
    if refused.is_empty() {
        Ok(accepted)
    } else {
        Err(RefusedChanges(refused))
    }
}

fn compare_kind(
    old: &KindDef,
    new: &KindDef,
    refuse: &mut impl FnMut(String, &'static str),
    accepted: &mut Vec<SchemaChange>,
) {
    let name = &old.name;
    if old.table != new.table {
        refuse(
            format!(
                "kind {name:?}: table renamed from {:?} to {:?}",
                old.table, new.table
            ),
            "rename the table in the database and in the file together, with recon stopped",
        );
    }
    if old.key != new.key {
        refuse(
            format!(
                "kind {name:?}: key changed from ({}) to ({})",
                old.key.join(", "),
                new.key.join(", ")
            ),
            NEW_KIND_INSTEAD,
        );
    }
    for (index, old_field) in old.fields.iter().enumerate() {
        match new.fields.get(index) {
            Some(new_field) if new_field.name == old_field.name => {
                if let Some(problem) = field_change(old_field, new_field) {
                    refuse(
                        format!("kind {name:?}, field {:?}: {problem}", old_field.name),
                        NEW_FIELD_INSTEAD,
                    );
                }
            }
            _ => refuse(
                format!(
                    "kind {name:?}: field {:?} removed, renamed or moved",
                    old_field.name
                ),
                "fields keep their place (the encoding follows it); add new fields at the end",
            ),
        }
    }
    for field in new.fields.iter().skip(old.fields.len()) {
        if !field.nullable {
            refuse(
                format!("kind {name:?}: new field {:?} is not nullable", field.name),
                "existing rows have no value for it: declare it `nullable = true`",
            );
            continue;
        }
        accepted.push(SchemaChange::AddField {
            kind: name.clone(),
            table: new.table.clone(),
            field: field.clone(),
        });
    }
}

/// Why a field's new definition cannot replace its old one, if it cannot.
fn field_change(old: &FieldDef, new: &FieldDef) -> Option<String> {
    if old.nullable != new.nullable {
        return Some(format!(
            "nullable changed from {} to {}",
            old.nullable, new.nullable
        ));
    }
    match (&old.field_type, &new.field_type) {
        (
            FieldType::Text {
                max_length: old_max,
            },
            FieldType::Text {
                max_length: new_max,
            },
        ) => match (old_max, new_max) {
            (_, None) => None,
            (Some(old_max), Some(new_max)) if new_max >= old_max => None,
            _ => Some(format!(
                "max_length lowered from {} to {}",
                old_max.map_or("none".to_owned(), |max| max.to_string()),
                new_max.map_or("none".to_owned(), |max| max.to_string())
            )),
        },
        (FieldType::Enum { values: old_values }, FieldType::Enum { values: new_values }) => {
            let removed: Vec<&str> = old_values
                .iter()
                .filter(|value| !new_values.contains(value))
                .map(String::as_str)
                .collect();
            (!removed.is_empty()).then(|| format!("enum values removed: {}", removed.join(", ")))
        }
        (old_type, new_type) if old_type == new_type => None,
        (old_type, new_type) => Some(format!("type changed from {old_type} to {new_type}")),
    }
}
