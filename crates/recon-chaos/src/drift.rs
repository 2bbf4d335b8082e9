//! Drift injected straight into the replica database behind recon's back
//! (simulated replication bugs), for any declared schema: in every scoped
//! kind's table, each data field changed in a few live rows, a few rows
//! lost, and a few phantom rows (copies of live rows under keys the source
//! never had).
//!
//! A field's change is the smallest one its type allows, the kinds of
//! damage a digest must not miss: a nullable text's NULL becomes the empty
//! text, a JSON document is rewritten with its keys in PostgreSQL's order
//! (the same document, another text), a timestamp moves by a microsecond,
//! an integer by one, a boolean flips, an enum takes another listed value,
//! a text is garbled.
//!
//! The statements are plain SQL built from the schema's table and column
//! names; nothing here is recon's code.

use anyhow::Context;
use recon_core::schema::{FieldDef, FieldType, KindDef, Schema};
use sea_orm::{ConnectionTrait, Database};

/// Rows changed per data field and kind.
const CHANGED_ROWS: usize = 3;

/// Rows lost per kind.
const LOST_ROWS: usize = 3;

/// Phantom rows per kind.
const PHANTOM_ROWS: usize = 2;

/// Drifts the replica at `replica_db` of `schema`; `seed` picks the rows.
/// Returns the rows changed.
pub async fn drift(replica_db: &str, schema: &Schema, seed: u64) -> anyhow::Result<u64> {
    let connection = Database::connect(replica_db).await?;
    let mut changed = 0;
    for statement in statements(schema, seed % 1_000) {
        changed += connection
            .execute_unprepared(&statement)
            .await
            .with_context(|| format!("drift: {statement}"))?
            .rows_affected();
    }
    connection.close().await.ok();
    Ok(changed)
}

/// The drift's statements, kind by kind.
fn statements(schema: &Schema, salt: u64) -> Vec<String> {
    let scope_column = schema.scope_column();
    let mut statements = Vec::new();
    for kind in schema.scoped() {
        let rows = Rows::of(kind, &scope_column, salt);
        for field in &kind.fields {
            if let Some((value, preferred)) = change(field, salt) {
                statements.push(format!(
                    "UPDATE {table} SET {name} = {value} WHERE ({key}) IN ({chosen})",
                    table = kind.table,
                    name = field.name,
                    key = rows.key,
                    chosen = rows.choose(&field.name, preferred.as_deref(), CHANGED_ROWS),
                ));
            }
        }
        statements.push(format!(
            "DELETE FROM {table} WHERE ({key}) IN ({chosen})",
            table = kind.table,
            key = rows.key,
            chosen = rows.choose("lost", None, LOST_ROWS),
        ));
        statements.push(rows.phantoms(kind, &scope_column, PHANTOM_ROWS));
    }
    statements
}

/// A kind's rows as the drift picks them.
struct Rows {
    /// The primary key's columns: `scope, key…`.
    key: String,
    /// What orders the rows, per salt.
    order: String,
    table: String,
    salt: u64,
}

impl Rows {
    fn of(kind: &KindDef, scope_column: &str, salt: u64) -> Self {
        let mut columns = vec![scope_column.to_owned()];
        columns.extend(kind.key.iter().cloned());
        Self {
            key: columns.join(", "),
            order: columns.join(" || '/' || "),
            table: kind.table.clone(),
            salt,
        }
    }

    /// The keys of `limit` live rows, those where `preferred` holds first,
    /// in an order of the salt and `purpose`.
    fn choose(&self, purpose: &str, preferred: Option<&str>, limit: usize) -> String {
        let preferred =
            preferred.map_or(String::new(), |condition| format!("({condition}) DESC, "));
        format!(
            "SELECT {key} FROM {table} WHERE NOT deleted \
             ORDER BY {preferred}md5({order} || '{purpose}{salt}') LIMIT {limit}",
            key = self.key,
            table = self.table,
            order = self.order,
            salt = self.salt,
        )
    }

    /// Copies of `limit` live rows, the last key part suffixed, at the
    /// lowest version.
    fn phantoms(&self, kind: &KindDef, scope_column: &str, limit: usize) -> String {
        let columns: Vec<String> = std::iter::once(scope_column.to_owned())
            .chain(kind.key.iter().cloned())
            .chain(kind.fields.iter().map(|field| field.name.clone()))
            .collect();
        let mut values = columns.clone();
        let last = kind.key.len();
        values[last] = format!("{} || '-phantom-{}'", values[last], self.salt);
        format!(
            "INSERT INTO {table} ({columns}, generation, sequence, deleted) \
             SELECT {values}, 1, 1, FALSE FROM {table} WHERE ({key}) IN ({chosen}) \
             ON CONFLICT DO NOTHING",
            table = self.table,
            columns = columns.join(", "),
            values = values.join(", "),
            key = self.key,
            chosen = self.choose("phantom", None, limit),
        )
    }
}

/// The new value of a field (SQL) and which rows show the change best
/// (a condition preferred rows meet, if any); `None` for a one-value enum.
fn change(field: &FieldDef, salt: u64) -> Option<(String, Option<String>)> {
    let name = &field.name;
    let not_null = Some(format!("{name} IS NOT NULL"));
    Some(match &field.field_type {
        FieldType::Text { .. } if field.nullable => (
            format!("CASE WHEN {name} IS NULL THEN '' ELSE 'garbled {salt}' END"),
            Some(format!("{name} IS NULL")),
        ),
        FieldType::Text { .. } => (format!("'garbled {salt}'"), None),
        FieldType::Integer => (format!("{name} + 1"), not_null),
        FieldType::Boolean => (format!("NOT {name}"), not_null),
        FieldType::Timestamp => (format!("{name} + interval '1 microsecond'"), not_null),
        FieldType::Enum { values } => {
            let [first, second, ..] = values.as_slice() else {
                return None;
            };
            (
                format!("CASE WHEN {name} = '{first}' THEN '{second}' ELSE '{first}' END"),
                not_null,
            )
        }
        FieldType::Json => (format!("({name}::jsonb)::text"), not_null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_tests::private_postgres::PrivatePostgres;

    fn catalog() -> Schema {
        Schema::parse(include_str!("../../../proto/schemas/catalog.toml")).expect("valid")
    }

    /// Every statement is valid SQL for recon's tables of both schemas
    /// (PostgreSQL checks types and names even where no row matches).
    #[tokio::test]
    async fn the_drift_runs_on_the_tables_of_any_schema() -> anyhow::Result<()> {
        let postgres = PrivatePostgres::start().await?;
        for (name, schema) in [
            ("tenants", Schema::default_schema().clone()),
            ("catalog", catalog()),
        ] {
            let url = postgres.create_database(name).await?;
            recon_tests::migrate_store_to(&url, &schema).await?;
            assert_eq!(drift(&url, &schema, 1).await?, 0, "{name}: empty tables");
        }
        Ok(())
    }

    #[test]
    fn every_scoped_kind_and_field_is_drifted() {
        let statements = statements(Schema::default_schema(), 7);
        let text = statements.join("\n");
        for table in ["replica_users", "replica_groups", "replica_memberships"] {
            assert!(text.contains(&format!("DELETE FROM {table}")), "{text}");
            assert!(text.contains(&format!("INSERT INTO {table}")), "{text}");
        }
        assert!(!text.contains("replica_tenants"), "{text}");
        for field in ["email", "display_name", "status"] {
            assert!(
                text.contains(&format!("UPDATE replica_users SET {field} = ")),
                "{text}"
            );
        }
        assert!(
            text.contains(
                "INSERT INTO replica_memberships (tenant_id, group_id, user_id, generation"
            ),
            "{text}"
        );
        assert!(
            text.contains("SELECT tenant_id, group_id, user_id || '-phantom-7', 1, 1"),
            "{text}"
        );
    }
}
