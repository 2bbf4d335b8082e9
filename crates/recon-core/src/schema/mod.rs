//! The declared data model: which kinds recon replicates, their keys, their
//! fields and their types, read from a schema file (TOML).
//!
//! A [`Schema`] names one **scope kind** (the default schema's tenant): every
//! other kind lives inside one scope value, and a scope value lives inside
//! itself. Each [`KindDef`] has a name, a plural (its URL segment), a
//! replica table, key fields (text ids, ordered; keys compare field by field,
//! each byte-wise), the kinds it references (the apply order: referenced
//! kinds first, deletions in reverse) and typed data fields ([`FieldType`]).
//! Versions, tombstones and digests are recon's own and are added to every
//! kind; their column names are reserved.
//!
//! A kind's digest tag is its position in the file (1 for the first kind):
//! new kinds go at the end (see `docs/schema.md`, evolution). Every kind but
//! the scope kind is scoped; global kinds are not supported.
//!
//! The file format and the canonical encoding are specified in
//! `docs/schema.md`; [`Schema::parse`] reports every problem of a bad file
//! at once ([`SchemaErrors`]).

pub mod evolution;
mod parse;
mod row;
mod value;

pub use parse::{SchemaError, SchemaErrors};
pub use row::{DeclaredChange, DeclaredRow, InvalidRow};
pub use value::{
    FieldValue, InvalidValue, SqlParameter, canonical_json, canonical_json_value, encode_row,
    format_timestamp, parse_timestamp, row_hash_of_values,
};

use std::fmt;
use std::sync::LazyLock;

/// The default schema's text (`proto/schemas/tenants-users-groups.toml`):
/// the model of every store created before schemas were declared.
pub const DEFAULT_SCHEMA_TOML: &str =
    include_str!("../../../../proto/schemas/tenants-users-groups.toml");

/// Column names recon adds to every kind's table, which no key or data
/// field may take.
pub const RESERVED_COLUMNS: [&str; 6] = [
    "generation",
    "sequence",
    "row_hash",
    "deleted",
    "deleted_at_ms",
    "digest",
];

/// Plurals no kind may take: the Source API's own URL segments and the
/// properties that sit beside the kinds' plurals in its answers
/// (`/v1/capabilities`, `/v1/{scope}/{id}/counts`, `.../digests`,
/// `.../pages/...`; `watermark` and `id` in counts and digests).
pub const RESERVED_PLURALS: [&str; 6] = [
    "capabilities",
    "counts",
    "digests",
    "pages",
    "id",
    "watermark",
];

/// The property of a Source API item that holds the row's version, which
/// no key or data field may take.
pub const VERSION_PROPERTY: &str = "version";

/// A validated schema. Two schemas are equal when they declare the same
/// kinds alike, whatever their files' comments and layout.
#[derive(Debug, Clone)]
pub struct Schema {
    kinds: Vec<KindDef>,
    scope: usize,
    apply_order: Vec<usize>,
    text: String,
}

/// One declared kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindDef {
    /// Singular name, as in reports, metrics and events (`user`).
    pub name: String,
    /// Plural, the Source API's URL segment (`users`).
    pub plural: String,
    /// The replica table.
    pub table: String,
    /// Key fields in key order; each holds a text id.
    pub key: Vec<String>,
    /// Kinds this kind's rows refer to (applied before it).
    pub references: Vec<String>,
    /// Data fields in declaration order (the canonical encoding's order).
    pub fields: Vec<FieldDef>,
    /// The digest tag: the kind's 1-based position in the file.
    pub tag: u8,
    /// Whether rows live inside a scope value (every kind but the scope
    /// kind).
    pub scoped: bool,
}

/// One declared data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// Column and JSON property name.
    pub name: String,
    /// The field's type.
    pub field_type: FieldType,
    /// Whether the field may be `NULL` (distinct from empty text).
    pub nullable: bool,
}

/// The type of a data field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// UTF-8 text, at most `max_length` characters if given.
    Text {
        /// Longest value accepted, in characters.
        max_length: Option<u32>,
    },
    /// A signed 64-bit integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// An instant in UTC with millisecond precision.
    Timestamp,
    /// One of the listed values.
    Enum {
        /// The accepted values.
        values: Vec<String>,
    },
    /// A JSON document, stored and compared in its canonical text form.
    Json,
}

impl FieldType {
    /// The type's name in a schema file.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Text { .. } => "text",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Enum { .. } => "enum",
            FieldType::Json => "json",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Text {
                max_length: Some(max),
            } => write!(formatter, "text (at most {max} characters)"),
            FieldType::Enum { values } => write!(formatter, "enum ({})", values.join(", ")),
            other => formatter.write_str(other.name()),
        }
    }
}

impl Schema {
    /// Parses and validates a schema file's text; every problem found is
    /// reported (see [`SchemaErrors`]).
    pub fn parse(text: &str) -> Result<Self, SchemaErrors> {
        parse::parse(text)
    }

    /// The default schema (tenants, users, groups, memberships), parsed
    /// once.
    pub fn default_schema() -> &'static Self {
        static DEFAULT: LazyLock<Schema> = LazyLock::new(|| {
            // The embedded file is checked by a test: a failure here is a
            // build defect, not bad input.
            Schema::parse(DEFAULT_SCHEMA_TOML).expect("the embedded default schema is valid")
        });
        &DEFAULT
    }

    /// The file's text, as parsed (what a store records it holds).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The kinds in file order.
    pub fn kinds(&self) -> &[KindDef] {
        &self.kinds
    }

    /// The scope kind.
    pub fn scope(&self) -> &KindDef {
        &self.kinds[self.scope]
    }

    /// The kind named `name` (singular or plural).
    pub fn kind(&self, name: &str) -> Option<&KindDef> {
        self.kinds
            .iter()
            .find(|kind| kind.name == name || kind.plural == name)
    }

    /// The kinds in apply order: the scope kind first, every kind after the
    /// kinds it references (deletions run in the reverse order). Among
    /// kinds free to go in either order, file order decides.
    pub fn apply_order(&self) -> impl DoubleEndedIterator<Item = &KindDef> {
        self.apply_order.iter().map(|index| &self.kinds[*index])
    }

    /// The kinds that live inside a scope value, in file order: the order
    /// of every per-kind list (counts, whole-scope digests).
    pub fn scoped(&self) -> impl Iterator<Item = &KindDef> {
        self.kinds.iter().filter(|kind| kind.scoped)
    }

    /// The scope kind.
    pub fn scope_kind(&'static self) -> crate::Kind {
        crate::Kind::of(self.scope())
    }

    /// [`Schema::scoped`] as kinds.
    pub fn scoped_kinds(&'static self) -> Vec<crate::Kind> {
        self.scoped().map(crate::Kind::of).collect()
    }

    /// The plural of `kind` (its name for a kind not declared).
    pub fn plural_of(&self, kind: crate::Kind) -> &str {
        self.kind(kind.as_str())
            .map_or(kind.as_str(), |kind| kind.plural.as_str())
    }

    /// How many key fields `kind` has (1 for a kind not declared).
    pub fn key_parts(&self, kind: crate::Kind) -> usize {
        self.kind(kind.as_str()).map_or(1, |kind| kind.key.len())
    }

    /// The name of the column that holds a scoped row's scope value
    /// (`tenant_id` for the scope kind `tenant`).
    pub fn scope_column(&self) -> String {
        format!("{}_id", self.scope().name)
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.kinds == other.kinds && self.scope == other.scope
    }
}

impl Eq for Schema {}

impl KindDef {
    /// The data field named `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|field| field.name == name)
    }
}

impl fmt::Display for Schema {
    /// A readable summary: each kind in apply order with its table, key and
    /// typed fields.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "scope: {}", self.scope().name)?;
        for kind in self.apply_order() {
            writeln!(
                formatter,
                "{} ({}), table {}, tag {}, key ({})",
                kind.name,
                kind.plural,
                kind.table,
                kind.tag,
                kind.key.join(", ")
            )?;
            if !kind.references.is_empty() {
                writeln!(formatter, "  references {}", kind.references.join(", "))?;
            }
            for field in &kind.fields {
                let nullable = if field.nullable { ", nullable" } else { "" };
                writeln!(
                    formatter,
                    "  {}: {}{nullable}",
                    field.name, field.field_type
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
