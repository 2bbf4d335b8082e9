//! Reading a schema file: TOML into raw declarations, then one validation
//! pass that collects every problem instead of stopping at the first.

use super::{
    FieldDef, FieldType, KindDef, RESERVED_COLUMNS, RESERVED_PLURALS, Schema, VERSION_PROPERTY,
};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Longest identifier (kind, plural, table, field), PostgreSQL's limit.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// One problem of a schema file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Not TOML, or a property the format does not have.
    #[error("not a schema file: {0}")]
    Syntax(String),
    /// `scope` is missing.
    #[error("no scope kind declared: add `scope = \"<kind>\"`")]
    NoScope,
    /// `scope` names no declared kind.
    #[error("the scope kind {0:?} is not declared as a kind")]
    UnknownScope(String),
    /// The scope kind's key is not exactly one field.
    #[error("the scope kind {kind:?} must have exactly one key field, it has {count}")]
    ScopeKey {
        /// The scope kind.
        kind: String,
        /// How many key fields it declares.
        count: usize,
    },
    /// The scope kind references another kind (every kind lives in it).
    #[error("the scope kind {0:?} cannot reference other kinds: every kind lives inside it")]
    ScopeReferences(String),
    /// No kind at all.
    #[error("no kind declared: add a [[kind]] table")]
    NoKinds,
    /// More kinds than a digest tag can number.
    #[error("{0} kinds declared, at most 255 allowed")]
    TooManyKinds(usize),
    /// A name that is not a lowercase identifier.
    #[error("{what} {name:?} is not allowed: {reason}")]
    InvalidName {
        /// What the name names, e.g. `field of kind "user"`.
        what: String,
        /// The name.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// Two kinds share a name or plural, or two kinds share a table.
    #[error("{what} {name:?} is declared twice")]
    Duplicate {
        /// What is duplicated, e.g. `kind name` or `field of kind "user"`.
        what: String,
        /// The duplicated name.
        name: String,
    },
    /// A kind without key fields.
    #[error("kind {0:?} has no key field: add `key = [\"id\"]`")]
    NoKey(String),
    /// A field named like a column recon adds.
    #[error(
        "kind {kind:?}: {name:?} is a column recon adds to every kind (reserved: {reserved}); rename the field"
    )]
    Reserved {
        /// The kind.
        kind: String,
        /// The reserved name used.
        name: String,
        /// The reserved names.
        reserved: String,
    },
    /// A field type the format does not have.
    #[error(
        "kind {kind:?}, field {field:?}: unknown type {type_name:?} (one of text, integer, boolean, timestamp, enum, json)"
    )]
    UnknownType {
        /// The kind.
        kind: String,
        /// The field.
        field: String,
        /// The type given.
        type_name: String,
    },
    /// An option that does not go with the field's type.
    #[error("kind {kind:?}, field {field:?}: {problem}")]
    FieldOption {
        /// The kind.
        kind: String,
        /// The field.
        field: String,
        /// What is wrong, e.g. `values given for a text field`.
        problem: String,
    },
    /// A reference to a kind not declared.
    #[error("kind {kind:?} references {reference:?}, which is not a declared kind")]
    UnknownReference {
        /// The referencing kind.
        kind: String,
        /// The unknown name.
        reference: String,
    },
    /// References that go round in a circle.
    #[error("references form a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

/// Every problem found in a schema file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SchemaErrors(pub Vec<SchemaError>);

impl fmt::Display for SchemaErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            formatter,
            "invalid schema ({count} problem{}):",
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.0 {
            write!(formatter, "\n  - {error}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    scope: Option<String>,
    #[serde(default)]
    kind: Vec<RawKind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    name: String,
    plural: String,
    table: String,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    field: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    nullable: bool,
    max_length: Option<u32>,
    values: Option<Vec<String>>,
}

/// See [`Schema::parse`].
pub(super) fn parse(text: &str) -> Result<Schema, SchemaErrors> {
    let raw: RawSchema = toml::from_str(text)
        .map_err(|error| SchemaErrors(vec![SchemaError::Syntax(error.to_string())]))?;
    let mut errors = Vec::new();
    let scope_name = raw.scope.clone();
    let scope = match &scope_name {
        None => {
            errors.push(SchemaError::NoScope);
            None
        }
        Some(scope) => {
            let found = raw.kind.iter().position(|kind| &kind.name == scope);
            if found.is_none() {
                errors.push(SchemaError::UnknownScope(scope.clone()));
            }
            found
        }
    };
    if raw.kind.is_empty() {
        errors.push(SchemaError::NoKinds);
    }
    if raw.kind.len() > usize::from(u8::MAX) {
        errors.push(SchemaError::TooManyKinds(raw.kind.len()));
    }
    let scope_column = scope_name.as_ref().map(|scope| format!("{scope}_id"));
    check_unique_kinds(&raw.kind, &mut errors);
    let mut kinds = Vec::with_capacity(raw.kind.len());
    for (index, raw_kind) in raw.kind.into_iter().enumerate() {
        let scoped = Some(index) != scope;
        let reserved_scope = if scoped {
            scope_column.as_deref()
        } else {
            None
        };
        kinds.push(kind_def(
            raw_kind,
            index,
            scoped,
            reserved_scope,
            &mut errors,
        ));
    }
    if let Some(scope) = scope {
        let kind = &kinds[scope];
        if kind.key.len() != 1 {
            errors.push(SchemaError::ScopeKey {
                kind: kind.name.clone(),
                count: kind.key.len(),
            });
        }
        if !kind.references.is_empty() {
            errors.push(SchemaError::ScopeReferences(kind.name.clone()));
        }
    }
    let apply_order = apply_order(&kinds, scope, &mut errors);
    match (scope, errors.is_empty()) {
        (Some(scope), true) => Ok(Schema {
            kinds,
            scope,
            apply_order,
            text: text.to_owned(),
        }),
        _ => Err(SchemaErrors(errors)),
    }
}

fn check_unique_kinds(kinds: &[RawKind], errors: &mut Vec<SchemaError>) {
    let mut names = BTreeSet::new();
    let mut tables = BTreeSet::new();
    for kind in kinds {
        // A kind's name may equal its own plural ("sheep").
        let own: BTreeSet<&str> = [kind.name.as_str(), kind.plural.as_str()].into();
        for name in own {
            if !names.insert(name) {
                errors.push(duplicate("kind name or plural", name));
            }
        }
        if !tables.insert(kind.table.as_str()) {
            errors.push(duplicate("table", &kind.table));
        }
    }
}

fn kind_def(
    raw: RawKind,
    index: usize,
    scoped: bool,
    scope_column: Option<&str>,
    errors: &mut Vec<SchemaError>,
) -> KindDef {
    check_identifier("kind name", &raw.name, false, errors);
    check_identifier(
        &format!("plural of kind {:?}", raw.name),
        &raw.plural,
        true,
        errors,
    );
    if RESERVED_PLURALS.contains(&raw.plural.as_str()) {
        errors.push(SchemaError::InvalidName {
            what: format!("plural of kind {:?}", raw.name),
            name: raw.plural.clone(),
            reason: format!(
                "the Source API uses it (reserved: {})",
                RESERVED_PLURALS.join(", ")
            ),
        });
    }
    check_identifier(
        &format!("table of kind {:?}", raw.name),
        &raw.table,
        false,
        errors,
    );
    if raw.key.is_empty() {
        errors.push(SchemaError::NoKey(raw.name.clone()));
    }
    let what = format!("field of kind {:?}", raw.name);
    let mut columns = BTreeSet::new();
    let names = raw
        .key
        .iter()
        .chain(raw.field.iter().map(|field| &field.name));
    for name in names {
        check_identifier(&what, name, false, errors);
        if !columns.insert(name.as_str()) {
            errors.push(duplicate(&what, name));
        }
        if name == VERSION_PROPERTY {
            errors.push(SchemaError::InvalidName {
                what: what.clone(),
                name: name.clone(),
                reason: "a Source API item carries the row's version under this name".to_owned(),
            });
        }
        if RESERVED_COLUMNS.contains(&name.as_str()) || Some(name.as_str()) == scope_column {
            let mut reserved = RESERVED_COLUMNS.join(", ");
            if let Some(scope_column) = scope_column {
                reserved = format!("{scope_column}, {reserved}");
            }
            errors.push(SchemaError::Reserved {
                kind: raw.name.clone(),
                name: name.clone(),
                reserved,
            });
        }
    }
    let fields = raw
        .field
        .into_iter()
        .filter_map(|field| field_def(&raw.name, field, errors))
        .collect();
    KindDef {
        tag: u8::try_from(index + 1).unwrap_or(u8::MAX),
        name: raw.name,
        plural: raw.plural,
        table: raw.table,
        key: raw.key,
        references: raw.references,
        fields,
        scoped,
    }
}

fn field_def(kind: &str, raw: RawField, errors: &mut Vec<SchemaError>) -> Option<FieldDef> {
    let mut problem = |problem: String| {
        errors.push(SchemaError::FieldOption {
            kind: kind.to_owned(),
            field: raw.name.clone(),
            problem,
        });
    };
    let field_type = match raw.type_name.as_str() {
        "text" => FieldType::Text {
            max_length: raw.max_length,
        },
        "integer" => FieldType::Integer,
        "boolean" => FieldType::Boolean,
        "timestamp" => FieldType::Timestamp,
        "json" => FieldType::Json,
        "enum" => {
            let values = raw.values.clone().unwrap_or_default();
            if values.is_empty() {
                problem("an enum needs `values = [...]`, at least one".to_owned());
            }
            let mut seen = BTreeSet::new();
            for value in &values {
                if value.is_empty() || value.chars().any(char::is_control) {
                    problem(format!(
                        "enum value {value:?} is empty or holds a control character"
                    ));
                } else if !seen.insert(value) {
                    problem(format!("enum value {value:?} is listed twice"));
                }
            }
            FieldType::Enum { values }
        }
        _ => {
            errors.push(SchemaError::UnknownType {
                kind: kind.to_owned(),
                field: raw.name.clone(),
                type_name: raw.type_name.clone(),
            });
            return None;
        }
    };
    if raw.max_length.is_some() && !matches!(field_type, FieldType::Text { .. }) {
        problem(format!(
            "`max_length` is for text fields, not {}",
            field_type.name()
        ));
    }
    if raw.values.is_some() && !matches!(field_type, FieldType::Enum { .. }) {
        problem(format!(
            "`values` is for enum fields, not {}",
            field_type.name()
        ));
    }
    Some(FieldDef {
        name: raw.name,
        field_type,
        nullable: raw.nullable,
    })
}

fn check_identifier(what: &str, name: &str, dashes: bool, errors: &mut Vec<SchemaError>) {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|first| first.is_ascii_lowercase());
    let rest_ok = chars.all(|next| {
        next.is_ascii_lowercase() || next.is_ascii_digit() || next == '_' || (dashes && next == '-')
    });
    let reason = if !first_ok || !rest_ok {
        let allowed = if dashes { ", '_' and '-'" } else { " and '_'" };
        Some(format!(
            "use a lowercase ASCII letter, then lowercase letters, digits{allowed}"
        ))
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Some(format!("longer than {MAX_IDENTIFIER_BYTES} bytes"))
    } else {
        None
    };
    if let Some(reason) = reason {
        errors.push(SchemaError::InvalidName {
            what: what.to_owned(),
            name: name.to_owned(),
            reason,
        });
    }
}

fn duplicate(what: &str, name: &str) -> SchemaError {
    SchemaError::Duplicate {
        what: what.to_owned(),
        name: name.to_owned(),
    }
}

/// The kinds' indexes in apply order (Kahn's algorithm; the lowest file
/// position first among the ready ones). Reports unknown references and a
/// cycle, named kind by kind.
fn apply_order(
    kinds: &[KindDef],
    scope: Option<usize>,
    errors: &mut Vec<SchemaError>,
) -> Vec<usize> {
    let index_of: HashMap<&str, usize> = kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| (kind.name.as_str(), index))
        .collect();
    // parents[k]: the kinds k must come after.
    let mut parents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); kinds.len()];
    for (index, kind) in kinds.iter().enumerate() {
        if let Some(scope) = scope.filter(|scope| *scope != index) {
            parents[index].insert(scope);
        }
        for reference in &kind.references {
            match index_of.get(reference.as_str()) {
                Some(parent) => {
                    parents[index].insert(*parent);
                }
                None => errors.push(SchemaError::UnknownReference {
                    kind: kind.name.clone(),
                    reference: reference.clone(),
                }),
            }
        }
    }
    let mut order = Vec::with_capacity(kinds.len());
    let mut placed = vec![false; kinds.len()];
    while let Some(next) = (0..kinds.len())
        .find(|index| !placed[*index] && parents[*index].iter().all(|parent| placed[*parent]))
    {
        placed[next] = true;
        order.push(next);
    }
    if order.len() < kinds.len() {
        let cycle = find_cycle(&parents, &placed);
        errors.push(SchemaError::Cycle(
            cycle
                .iter()
                .map(|index| kinds[*index].name.clone())
                .collect(),
        ));
    }
    order
}

/// A cycle among the kinds not placed: walk parent links from the first
/// one until a kind repeats; the cycle is the walk from that kind on,
/// closed by it again.
fn find_cycle(parents: &[BTreeSet<usize>], placed: &[bool]) -> Vec<usize> {
    let Some(start) = placed.iter().position(|placed| !placed) else {
        return Vec::new();
    };
    let mut walk = vec![start];
    loop {
        let current = walk[walk.len() - 1];
        let Some(next) = parents[current]
            .iter()
            .copied()
            .find(|parent| !placed[*parent])
        else {
            return walk;
        };
        if let Some(position) = walk.iter().position(|seen| *seen == next) {
            let mut cycle = walk[position..].to_vec();
            cycle.push(next);
            // Parent links point backwards: name the cycle in reference
            // order (a references b references a).
            return cycle;
        }
        walk.push(next);
    }
}
