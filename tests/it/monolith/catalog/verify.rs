//! The independent row check (`recon_monolith::verify`) on the catalog: a
//! replica holding exactly the monolith's rows has no difference, one
//! value changed behind recon's back is one difference on each side — with
//! the monolith on PostgreSQL and the replica on SQLite, so that every
//! field type's line is the same text from both backends.

use super::{catalog, populate, start};
use anyhow::ensure;
use recon_core::schema::FieldValue;
use recon_monolith::verify::compare_schema_databases;
use recon_tests::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, Value};

/// A value as SQLite's replica column stores it.
fn sqlite_value(value: &FieldValue) -> Value {
    match value {
        FieldValue::Null => Value::String(None),
        FieldValue::Text(text) | FieldValue::Json(text) => text.clone().into(),
        FieldValue::Integer(number) | FieldValue::Timestamp(number) => (*number).into(),
        FieldValue::Boolean(flag) => (*flag).into(),
    }
}

#[tokio::test]
async fn a_catalog_replica_is_compared_row_by_row_across_backends() -> anyhow::Result<()> {
    let server = start(Backend::Postgres).await?;
    populate(&server).await?;
    let schema = catalog();
    let replica = TestDatabase::create(Backend::Sqlite).await?;
    let connection = Database::connect(&replica.url).await?;
    for statement in recon_store::schema_ddl(&schema, DbBackend::Sqlite) {
        connection.execute_unprepared(&statement).await?;
    }
    let (rows, _) = server.monolith.snapshot().await?;
    for row in &rows {
        let kind = schema.kind(&row.kind).expect("a declared kind");
        let mut columns = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if kind.scoped {
            columns.push(schema.scope_column());
            values.push(row.scope.clone().into());
        }
        for (name, part) in kind.key.iter().zip(&row.key) {
            columns.push(name.clone());
            values.push(part.clone().into());
        }
        for (field, value) in kind.fields.iter().zip(&row.values) {
            columns.push(field.name.clone());
            values.push(sqlite_value(value));
        }
        for (column, value) in [
            ("generation", Value::from(row.version.generation as i64)),
            ("sequence", Value::from(row.version.sequence as i64)),
            ("deleted", Value::from(false)),
        ] {
            columns.push(column.to_owned());
            values.push(value);
        }
        let placeholders: Vec<String> = (1..=values.len()).map(|n| format!("?{n}")).collect();
        connection
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    kind.table,
                    columns.join(", "),
                    placeholders.join(", ")
                ),
                values,
            ))
            .await?;
    }
    let equal = compare_schema_databases(&schema, server.database_url(), &replica.url).await?;
    ensure!(
        equal.is_empty() && equal.monolith_rows == rows.len() && equal.replica_rows == rows.len(),
        "{equal:?}"
    );
    connection
        .execute_unprepared(
            "UPDATE catalog_products SET released_at = released_at + 1, subtitle = NULL WHERE sku = 'p1'",
        )
        .await?;
    let drifted = compare_schema_databases(&schema, server.database_url(), &replica.url).await?;
    ensure!(
        drifted.total == 2
            && drifted.only_in_monolith.len() == 1
            && drifted.only_in_replica[0].contains("|NULL|"),
        "{drifted:?}"
    );
    connection.close().await?;
    server.stop().await
}
