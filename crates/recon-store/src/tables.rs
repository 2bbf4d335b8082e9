//! The replica tables of a declared schema and their DDL.
//!
//! One table per kind: the scope column (`<scope>_id`, scoped kinds only)
//! and the key columns (text ids that sort byte-wise: `COLLATE "C"` on
//! PostgreSQL, SQLite's default collation already is), the data columns
//! with the types below, then recon's own columns: `generation`,
//! `sequence`, `deleted`, `deleted_at_ms` (and, on PostgreSQL,
//! the generated `digest` of scoped kinds, see [`recon_core::digest`]).
//!
//! | field type | PostgreSQL    | SQLite                         |
//! |------------|---------------|--------------------------------|
//! | text, enum | `TEXT`        | `TEXT`                         |
//! | integer    | `BIGINT`      | `BIGINT`                       |
//! | boolean    | `BOOLEAN`     | `BOOLEAN`                      |
//! | timestamp  | `TIMESTAMPTZ` | `BIGINT` (µs since the epoch)  |
//! | json       | `TEXT` (canonical form) | `TEXT` (canonical form) |
//!
//! A column is `NOT NULL` unless its field is nullable. A tombstone keeps
//! its key; its data columns hold placeholders ([`Table::placeholder`]).

use crate::{Error, Result};
use recon_core::Kind;
use recon_core::schema::evolution::SchemaChange;
use recon_core::schema::{FieldDef, FieldType, FieldValue, KindDef, Schema};
use sea_orm::DbBackend;

/// Layout of one kind's table.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The kind's name.
    pub kind: String,
    /// Table name.
    pub name: String,
    /// `true` when rows live inside a scope value (the scope column).
    pub tenant_scoped: bool,
    /// The scope column's name (`tenant_id`).
    pub scope_column: String,
    /// Columns of the entity key, in key order.
    pub key_columns: Vec<String>,
    /// Data columns, in declaration order.
    pub data_columns: Vec<String>,
    /// The data columns' fields.
    pub fields: Vec<FieldDef>,
}

/// The tables of a store's declared schema.
#[derive(Debug)]
pub(crate) struct Tables {
    /// The schema they are made from.
    schema: &'static Schema,
    /// One per kind, in the schema's file order.
    tables: Vec<Table>,
}

impl Tables {
    /// The tables of `schema`.
    pub fn of(schema: &'static Schema) -> Self {
        Self {
            schema,
            tables: schema
                .kinds()
                .iter()
                .map(|kind| Table::of(schema, kind))
                .collect(),
        }
    }

    /// The schema the tables are made from.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// The table of `kind`.
    pub fn table(&self, kind: Kind) -> Result<&Table> {
        self.tables
            .iter()
            .find(|table| table.kind == kind.as_str())
            .ok_or_else(|| not_declared(kind))
    }

    /// The definition of `kind`.
    pub fn definition(&self, kind: Kind) -> Result<&'static KindDef> {
        self.schema
            .kind(kind.as_str())
            .filter(|definition| definition.name == kind.as_str())
            .ok_or_else(|| not_declared(kind))
    }

    /// The scope kind's table.
    pub fn scope(&self) -> &Table {
        let scope = &self.schema.scope().name;
        self.tables
            .iter()
            .find(|table| &table.kind == scope)
            .unwrap_or(&self.tables[0])
    }

    /// The kinds in apply order: referenced kinds first.
    pub fn upsert_order(&self) -> impl DoubleEndedIterator<Item = Kind> + '_ {
        self.schema.apply_order().map(Kind::of)
    }

    /// The tables of the kinds that live inside a scope, in the schema's
    /// file order (the order of every per-kind list).
    pub fn scoped(&self) -> impl DoubleEndedIterator<Item = &Table> + '_ {
        self.tables.iter().filter(|table| table.tenant_scoped)
    }
}

/// The refusal of a kind the store's schema does not declare.
pub(crate) fn not_declared(kind: Kind) -> Error {
    Error::InvalidData(format!("kind {kind} is not declared in the store's schema"))
}

impl Table {
    /// The table of a declared kind.
    pub fn of(schema: &Schema, kind: &KindDef) -> Self {
        Self {
            kind: kind.name.clone(),
            name: kind.table.clone(),
            tenant_scoped: kind.scoped,
            scope_column: schema.scope_column(),
            key_columns: kind.key.clone(),
            data_columns: kind.fields.iter().map(|field| field.name.clone()).collect(),
            fields: kind.fields.clone(),
        }
    }

    /// Primary-key columns: the scope column (if scoped) then the key
    /// columns.
    pub fn primary_key(&self) -> Vec<&str> {
        let mut columns = Vec::with_capacity(self.key_columns.len() + 1);
        if self.tenant_scoped {
            columns.push(self.scope_column.as_str());
        }
        columns.extend(self.key_columns.iter().map(String::as_str));
        columns
    }

    /// `CREATE TABLE IF NOT EXISTS` for this table.
    pub fn create_sql(&self, backend: DbBackend) -> String {
        let id_type = match backend {
            DbBackend::Postgres => "TEXT COLLATE \"C\" NOT NULL",
            _ => "TEXT NOT NULL",
        };
        let mut columns = Vec::new();
        for column in self.primary_key() {
            columns.push(format!("{column} {id_type}"));
        }
        for field in &self.fields {
            let not_null = if field.nullable { "" } else { " NOT NULL" };
            let column_type = column_type(&field.field_type, backend);
            columns.push(format!("{} {column_type}{not_null}", field.name));
        }
        columns.push("generation BIGINT NOT NULL".to_owned());
        columns.push("sequence BIGINT NOT NULL".to_owned());
        columns.push("deleted BOOLEAN NOT NULL".to_owned());
        columns.push("deleted_at_ms BIGINT".to_owned());
        columns.push(format!("PRIMARY KEY ({})", self.primary_key().join(", ")));
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
            self.name,
            columns.join(",\n  ")
        )
    }

    /// What a tombstone stores in data column `index`: NULL where the field
    /// allows it, else a value of the field's type (an enum's first value,
    /// so that a tombstone reads back like any row).
    pub fn placeholder(&self, index: usize) -> FieldValue {
        let Some(field) = self.fields.get(index) else {
            return FieldValue::Null;
        };
        if field.nullable {
            return FieldValue::Null;
        }
        match &field.field_type {
            FieldType::Text { .. } => FieldValue::Text(String::new()),
            FieldType::Enum { values } => {
                FieldValue::Text(values.first().cloned().unwrap_or_default())
            }
            FieldType::Json => FieldValue::Json("null".to_owned()),
            FieldType::Integer => FieldValue::Integer(0),
            FieldType::Boolean => FieldValue::Boolean(false),
            FieldType::Timestamp => FieldValue::Timestamp(0),
        }
    }

    /// A data column as it is selected: a PostgreSQL timestamp as its
    /// microseconds since the epoch (read back as
    /// [`FieldValue::Timestamp`]), under its own name.
    pub fn selected_columns(&self, backend: DbBackend, prefix: &str) -> String {
        let mut columns: Vec<String> = self
            .primary_key()
            .iter()
            .map(|column| format!("{prefix}{column}"))
            .collect();
        for field in &self.fields {
            let column = format!("{prefix}{}", field.name);
            columns.push(match (&field.field_type, backend) {
                (FieldType::Timestamp, DbBackend::Postgres) => format!(
                    "(extract(epoch FROM ({column} - timestamptz '1970-01-01 00:00:00+00')) * 1000000)::bigint AS {}",
                    field.name
                ),
                _ => column,
            });
        }
        columns.push(format!("{prefix}generation"));
        columns.push(format!("{prefix}sequence"));
        columns.join(", ")
    }
}

fn column_type(field_type: &FieldType, backend: DbBackend) -> &'static str {
    match (field_type, backend) {
        (FieldType::Text { .. } | FieldType::Enum { .. } | FieldType::Json, _) => "TEXT",
        (FieldType::Integer, _) => "BIGINT",
        (FieldType::Boolean, _) => "BOOLEAN",
        (FieldType::Timestamp, DbBackend::Postgres) => "TIMESTAMPTZ",
        (FieldType::Timestamp, _) => "BIGINT",
    }
}

/// The statements that create a schema's replica tables on `backend`, in
/// apply order: each kind's table, then (PostgreSQL) the digest functions
/// and the generated digest column of every scoped kind. Idempotent. The
/// store's own bookkeeping tables (fences, floors, runs) are
/// `recon store migrate`'s.
pub fn schema_ddl(schema: &Schema, backend: DbBackend) -> Vec<String> {
    let mut statements: Vec<String> = schema
        .apply_order()
        .map(|kind| Table::of(schema, kind).create_sql(backend))
        .collect();
    if backend == DbBackend::Postgres {
        statements.push(recon_core::digest::POSTGRES_FUNCTIONS.to_owned());
        statements.extend(
            schema
                .apply_order()
                .filter(|kind| kind.scoped)
                .map(add_digest_column),
        );
    }
    statements
}

/// The statements that take a store from one schema to the next (`new`,
/// after [`compare`](recon_core::schema::evolution::compare) accepted the
/// `changes`): a new kind's table (and digest column), a new field's
/// column; on PostgreSQL the digest column of a kind that gained a field
/// is generated again from the new expression (one rewrite of that table:
/// the reason migrations are `recon store migrate`'s, without the serving
/// sessions' statement timeout).
pub fn evolution_ddl(new: &Schema, changes: &[SchemaChange], backend: DbBackend) -> Vec<String> {
    let mut statements = Vec::new();
    let mut regenerate = Vec::new();
    for change in changes {
        match change {
            SchemaChange::AddKind(kind) => {
                statements.push(Table::of(new, kind).create_sql(backend));
                if backend == DbBackend::Postgres && kind.scoped {
                    statements.push(add_digest_column(kind));
                }
            }
            SchemaChange::AddField { kind, table, field } => {
                statements.push(format!(
                    "ALTER TABLE {table} ADD COLUMN {} {}",
                    field.name,
                    column_type(&field.field_type, backend)
                ));
                if !regenerate.contains(kind) {
                    regenerate.push(kind.clone());
                }
            }
        }
    }
    if backend == DbBackend::Postgres {
        for kind in regenerate.iter().filter_map(|name| new.kind(name)) {
            if kind.scoped {
                statements.push(format!(
                    "ALTER TABLE {} DROP COLUMN IF EXISTS digest",
                    kind.table
                ));
                statements.push(add_digest_column(kind));
            }
        }
    }
    statements
}

/// `ALTER TABLE … ADD COLUMN IF NOT EXISTS digest …` of a scoped kind.
fn add_digest_column(kind: &KindDef) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS digest BIGINT GENERATED ALWAYS AS ({}) STORED",
        kind.table,
        recon_core::digest::postgres_element_expression_of(kind)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_tables_are_the_tables_of_every_existing_store() {
        let tables = Tables::of(Schema::default_schema());
        let table = |kind| tables.table(kind);
        // The statement m0001 ran before schemas were declared, for users.
        assert_eq!(
            table(Kind::USER)
                .expect("declared")
                .create_sql(DbBackend::Postgres),
            "CREATE TABLE IF NOT EXISTS replica_users (\n  \
             tenant_id TEXT COLLATE \"C\" NOT NULL,\n  \
             id TEXT COLLATE \"C\" NOT NULL,\n  \
             email TEXT NOT NULL,\n  \
             display_name TEXT NOT NULL,\n  \
             status TEXT NOT NULL,\n  \
             generation BIGINT NOT NULL,\n  \
             sequence BIGINT NOT NULL,\n  \
             deleted BOOLEAN NOT NULL,\n  \
             deleted_at_ms BIGINT,\n  \
             PRIMARY KEY (tenant_id, id)\n)"
        );
        assert_eq!(
            table(Kind::MEMBERSHIP).expect("declared").primary_key(),
            ["tenant_id", "group_id", "user_id"]
        );
        assert_eq!(table(Kind::TENANT).expect("declared").primary_key(), ["id"]);
        // A user tombstone's status reads back as a valid status.
        assert_eq!(
            table(Kind::USER).expect("declared").placeholder(2),
            FieldValue::Text("active".to_owned())
        );
    }

    #[test]
    fn a_declared_schema_gets_typed_columns() {
        let schema = Schema::parse(include_str!("../../../proto/schemas/catalog.toml"))
            .expect("the catalog schema is valid");
        let statements = schema_ddl(&schema, DbBackend::Postgres);
        let products = &statements[1];
        assert!(
            products.starts_with("CREATE TABLE IF NOT EXISTS catalog_products"),
            "{products}"
        );
        for column in [
            "shop_id TEXT COLLATE \"C\" NOT NULL",
            "price_cents BIGINT NOT NULL",
            "active BOOLEAN NOT NULL",
            "attributes TEXT,",
            "released_at TIMESTAMPTZ,",
            "PRIMARY KEY (shop_id, sku)",
        ] {
            assert!(
                products.contains(column),
                "{column} missing from {products}"
            );
        }
        let sqlite = schema_ddl(&schema, DbBackend::Sqlite);
        assert_eq!(sqlite.len(), 5);
        assert!(sqlite[1].contains("released_at BIGINT,"));
        // Five tables, the functions, four digest columns (not the scope's).
        assert_eq!(statements.len(), 10);
    }
}
