//! The monolith's tables of a declared schema, as SQL (pure).
//!
//! Each kind gets a table (see [`crate::model`] for its name): the scope
//! column (scoped kinds), the key columns (text ids sorting byte-wise:
//! `COLLATE "C"` on PostgreSQL), one typed column per data field,
//! `generation` and `sequence`. Scoped kinds reference their scope row —
//! or, when they declare references, the referenced rows through their key
//! columns (which include the scope). An enum column checks its values.
//! Each kind has a `backup_<table>` twin for [`crate::backup`]. On
//! PostgreSQL every scoped kind's table also gets the generated `digest`
//! column ([`recon_core::digest::postgres_element_expression_of`]) and a
//! covering index of its key and digest.
//!
//! | field type | PostgreSQL    | SQLite                        |
//! |------------|---------------|-------------------------------|
//! | text, enum | `TEXT`        | `TEXT`                        |
//! | integer    | `BIGINT`      | `BIGINT`                      |
//! | boolean    | `BOOLEAN`     | `BOOLEAN`                     |
//! | timestamp  | `TIMESTAMPTZ` | `BIGINT` (µs since the epoch) |
//! | json       | `TEXT` (canonical form)       | `TEXT`        |
//!
//! For the default schema these are the tables migration `m0001` created
//! (a unit test compares them), so every monolith database has the layout
//! the generic code reads.

use crate::model::{KindPlan, Model};
use recon_core::schema::FieldType;
use sea_orm::DbBackend;

/// The type of an id column (scope and key columns).
pub(crate) fn id_type(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "TEXT COLLATE \"C\"",
        _ => "TEXT",
    }
}

/// The column type of a field type.
pub(crate) fn column_type(field_type: &FieldType, backend: DbBackend) -> &'static str {
    match (field_type, backend) {
        (FieldType::Text { .. } | FieldType::Enum { .. } | FieldType::Json, _) => "TEXT",
        (FieldType::Integer, _) => "BIGINT",
        (FieldType::Boolean, _) => "BOOLEAN",
        (FieldType::Timestamp, DbBackend::Postgres) => "TIMESTAMPTZ",
        (FieldType::Timestamp, _) => "BIGINT",
    }
}

/// The tables every monolith has whatever its schema: the meta counter,
/// the outbox and the backups' directory (`{ID}`, `{SERIAL}` and
/// `{BYTES}` stand for the backend's types).
pub(crate) const COMMON_TABLES: &str = r#"
CREATE TABLE meta (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL
);
INSERT INTO meta (id, generation, sequence) VALUES (1, 1, 0);
CREATE TABLE outbox (
    id {SERIAL},
    tenant_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    payload {BYTES} NOT NULL,
    published_at_ms BIGINT NULL
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at_ms IS NULL;
CREATE TABLE backups (
    id {SERIAL},
    created_at_ms BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL
)
"#;

/// `text` (statements separated by `;`) with the backend's types filled in.
pub(crate) fn statements_of(text: &str, backend: DbBackend) -> Vec<String> {
    let (serial, bytes) = match backend {
        DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BYTEA"),
        _ => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB"),
    };
    text.replace("{ID}", id_type(backend))
        .replace("{SERIAL}", serial)
        .replace("{BYTES}", bytes)
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The record of which schema a declared-schema database holds.
pub(crate) const SCHEMA_RECORD_TABLE: &str = "CREATE TABLE monolith_schema (\n    \
     id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),\n    schema TEXT NOT NULL\n)";

/// Every statement that creates a declared schema's database: the common
/// tables, the schema record, each kind's table and backup table, and on
/// PostgreSQL the digest functions, columns and indexes.
pub fn database_statements(model: &Model, backend: DbBackend) -> Vec<String> {
    let mut statements = statements_of(COMMON_TABLES, backend);
    statements.push(SCHEMA_RECORD_TABLE.to_owned());
    statements.extend(data_table_statements(model, backend));
    if backend == DbBackend::Postgres {
        statements.push(recon_core::digest::POSTGRES_FUNCTIONS.to_owned());
        statements.extend(digest_statements(model));
    }
    statements
}

/// Each kind's table (parents first) with its reference indexes, then each
/// kind's backup table.
pub fn data_table_statements(model: &Model, backend: DbBackend) -> Vec<String> {
    let mut statements = Vec::new();
    for index in model.insertion_order() {
        let kind = model.kind_at(index);
        statements.push(create_table(model, kind, backend));
        statements.extend(reference_indexes(model, kind));
    }
    for index in model.insertion_order() {
        statements.push(create_backup_table(model.kind_at(index), backend));
    }
    statements
}

fn create_table(model: &Model, kind: &KindPlan, backend: DbBackend) -> String {
    let id = id_type(backend);
    let mut lines = Vec::new();
    if kind.scoped() {
        let scope = model.scope();
        let inline_reference = if kind.references.is_empty() {
            format!(" REFERENCES {} ({})", scope.quoted_table(), scope.key()[0])
        } else {
            String::new()
        };
        lines.push(format!(
            "{} {id} NOT NULL{inline_reference}",
            kind.scope_column
        ));
        for column in kind.key() {
            lines.push(format!("{column} {id} NOT NULL"));
        }
    } else {
        lines.push(format!("{} {id} NOT NULL PRIMARY KEY", kind.key()[0]));
    }
    for field in kind.fields() {
        let not_null = if field.nullable { "" } else { " NOT NULL" };
        let check = match &field.field_type {
            FieldType::Enum { values } => {
                let quoted: Vec<String> = values
                    .iter()
                    .map(|value| format!("'{}'", value.replace('\'', "''")))
                    .collect();
                format!(" CHECK ({} IN ({}))", field.name, quoted.join(", "))
            }
            _ => String::new(),
        };
        let column_type = column_type(&field.field_type, backend);
        lines.push(format!("{} {column_type}{not_null}{check}", field.name));
    }
    lines.push("generation BIGINT NOT NULL".to_owned());
    lines.push("sequence BIGINT NOT NULL".to_owned());
    if kind.scoped() {
        lines.push(format!("PRIMARY KEY ({})", kind.primary_key().join(", ")));
    }
    for reference in &kind.references {
        let target = model.kind_at(reference.kind);
        let mut columns = vec![kind.scope_column.as_str()];
        columns.extend(
            reference
                .key_positions
                .iter()
                .map(|position| kind.key()[*position].as_str()),
        );
        lines.push(format!(
            "FOREIGN KEY ({}) REFERENCES {} ({})",
            columns.join(", "),
            target.quoted_table(),
            target.primary_key().join(", ")
        ));
    }
    format!(
        "CREATE TABLE {} (\n    {}\n)",
        kind.quoted_table(),
        lines.join(",\n    ")
    )
}

/// An index per reference whose columns do not lead the primary key (the
/// cascade of a deletion looks rows up through them).
fn reference_indexes(model: &Model, kind: &KindPlan) -> Vec<String> {
    let mut statements = Vec::new();
    for reference in &kind.references {
        let leads = reference
            .key_positions
            .iter()
            .enumerate()
            .all(|(order, position)| order == *position);
        if leads {
            continue;
        }
        let mut columns = vec![kind.scope_column.as_str()];
        columns.extend(
            reference
                .key_positions
                .iter()
                .map(|position| kind.key()[*position].as_str()),
        );
        statements.push(format!(
            "CREATE INDEX {}_by_{} ON {} ({})",
            kind.table,
            model.kind_at(reference.kind).name(),
            kind.quoted_table(),
            columns.join(", ")
        ));
    }
    statements
}

fn create_backup_table(kind: &KindPlan, backend: DbBackend) -> String {
    let id = id_type(backend);
    let mut lines = vec!["backup_id BIGINT NOT NULL REFERENCES backups (id)".to_owned()];
    for column in kind.primary_key() {
        lines.push(format!("{column} {id} NOT NULL"));
    }
    for field in kind.fields() {
        let not_null = if field.nullable { "" } else { " NOT NULL" };
        let column_type = column_type(&field.field_type, backend);
        lines.push(format!("{} {column_type}{not_null}", field.name));
    }
    lines.push("generation BIGINT NOT NULL".to_owned());
    lines.push("sequence BIGINT NOT NULL".to_owned());
    let mut key = vec!["backup_id"];
    key.extend(kind.primary_key());
    lines.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!(
        "CREATE TABLE {} (\n    {}\n)",
        kind.backup_table(),
        lines.join(",\n    ")
    )
}

/// PostgreSQL: each scoped kind's generated digest column and its covering
/// index (key order, digest included: a bucket split is an index-only
/// scan).
pub fn digest_statements(model: &Model) -> Vec<String> {
    let mut statements = Vec::new();
    for kind in model.scoped_kinds() {
        statements.push(format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS digest BIGINT GENERATED ALWAYS AS ({}) STORED",
            kind.quoted_table(),
            recon_core::digest::postgres_element_expression_of(&kind.def)
        ));
        statements.push(format!(
            "CREATE INDEX IF NOT EXISTS {}_digest ON {} ({}) INCLUDE (digest)",
            kind.table,
            kind.quoted_table(),
            kind.primary_key().join(", ")
        ));
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_core::schema::Schema;

    /// A statement without quotes, line breaks and repeated spaces.
    fn normalized(statement: &str) -> String {
        statement
            .replace(['"', '\n'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("( ", "(")
            .replace(" )", ")")
    }

    #[test]
    fn the_default_schema_gets_the_tables_m0001_created() {
        let model = Model::default_model();
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            let mut initial: Vec<String> =
                crate::db::migrations::initial_schema_statements(backend)
                    .iter()
                    .map(|statement| normalized(statement))
                    .collect();
            let mut generated: Vec<String> = statements_of(COMMON_TABLES, backend)
                .into_iter()
                .chain(data_table_statements(&model, backend))
                .map(|statement| normalized(&statement))
                .collect();
            initial.sort();
            generated.sort();
            assert_eq!(generated, initial, "{backend:?}");
        }
        // m0002's digest columns and m0003's covering indexes.
        let tables = [
            ("users", recon_core::Kind::USER),
            ("\"groups\"", recon_core::Kind::GROUP),
            ("memberships", recon_core::Kind::MEMBERSHIP),
        ];
        let mut migrated: Vec<String> = recon_core::digest::postgres_digest_columns(&tables)
            .into_iter()
            .skip(1)
            .chain(crate::db::migrations::DIGEST_INDEXES.map(str::to_owned))
            // The migration tolerates a store without the table; a new
            // monolith database always has it.
            .map(|statement| normalized(&statement.replace("ALTER TABLE IF EXISTS", "ALTER TABLE")))
            .collect();
        let mut generated: Vec<String> = digest_statements(&model)
            .iter()
            .map(|statement| normalized(statement))
            .collect();
        migrated.sort();
        generated.sort();
        assert_eq!(generated, migrated);
    }

    #[test]
    fn a_declared_schema_gets_typed_columns_and_references() {
        let schema =
            Schema::parse(include_str!("../../../proto/schemas/catalog.toml")).expect("valid");
        let model = Model::new(schema).expect("served");
        let statements = database_statements(&model, DbBackend::Postgres);
        let products = statements
            .iter()
            .find(|statement| statement.starts_with("CREATE TABLE \"products\""))
            .expect("products table");
        for column in [
            "shop_id TEXT COLLATE \"C\" NOT NULL REFERENCES \"shops\" (code)",
            "price_cents BIGINT NOT NULL",
            "active BOOLEAN NOT NULL",
            "attributes TEXT,",
            "released_at TIMESTAMPTZ,",
            "state TEXT NOT NULL CHECK (state IN ('draft', 'listed', 'retired'))",
            "PRIMARY KEY (shop_id, sku)",
        ] {
            assert!(
                products.contains(column),
                "{column} missing from {products}"
            );
        }
        let product_tags = statements
            .iter()
            .find(|statement| statement.starts_with("CREATE TABLE \"product_tags\""))
            .expect("product tags table");
        assert!(
            product_tags.contains("FOREIGN KEY (shop_id, tag) REFERENCES \"tags\" (shop_id, name)")
        );
        assert!(statements.contains(
            &"CREATE INDEX product_tags_by_tag ON \"product_tags\" (shop_id, tag)".to_owned()
        ));
        assert!(
            statements
                .iter()
                .any(|statement| statement.starts_with("ALTER TABLE \"variants\" ADD COLUMN"))
        );
        let sqlite = database_statements(&model, DbBackend::Sqlite);
        assert!(
            sqlite
                .iter()
                .any(|statement| statement.contains("released_at BIGINT,"))
        );
        assert!(sqlite.iter().all(|statement| !statement.contains("digest")));
    }
}
