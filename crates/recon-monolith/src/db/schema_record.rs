//! Which schema a monolith database holds, and preparing a database for
//! the schema the monolith is started with.
//!
//! * A database of the **default schema** is created and upgraded by the
//!   sea-orm migrations of [`super::migrations`] (as every monolith
//!   database before schemas were declared): it has `monolith_migrations`.
//! * A database of **any other schema** is created in one transaction from
//!   [`crate::ddl`] and records the schema's text in `monolith_schema`; it
//!   is opened again only with an equal schema.
//!
//! Opening a database with a schema other than the one it holds is
//! refused ([`Error::SchemaMismatch`]) before anything is written: the
//! monolith does not migrate its data from one schema to another.

use crate::ddl;
use crate::error::{DbResultExt, Error, Result};
use crate::model::Model;
use recon_core::schema::Schema;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait, Value};
use sea_orm_migration::{MigratorTrait, SchemaManager};

/// Creates or upgrades the database behind `connection` for `model`'s
/// schema, or refuses a database that holds another schema.
pub(crate) async fn prepare(connection: &DatabaseConnection, model: &Model) -> Result<()> {
    let manager = SchemaManager::new(connection);
    let action = "inspect the monolith's tables";
    let holds_default = manager
        .has_table("monolith_migrations")
        .await
        .during(action)?;
    let holds_declared = manager.has_table("monolith_schema").await.during(action)?;
    if model.is_default() {
        if holds_declared {
            let held = recorded_schema(connection).await?;
            return Err(mismatch(&held, model.schema()));
        }
        return super::migrations::Migrator::up(connection, None)
            .await
            .during("run the monolith's migrations");
    }
    if holds_default {
        return Err(mismatch(Schema::default_schema(), model.schema()));
    }
    if holds_declared {
        let held = recorded_schema(connection).await?;
        if &held != model.schema() {
            return Err(mismatch(&held, model.schema()));
        }
        return Ok(());
    }
    create(connection, model).await
}

/// Creates every table of `model` and records its schema, in one
/// transaction.
async fn create(connection: &DatabaseConnection, model: &Model) -> Result<()> {
    let backend = connection.get_database_backend();
    let txn = connection
        .begin()
        .await
        .during("begin creating the monolith's tables")?;
    for statement in ddl::database_statements(model, backend) {
        txn.execute_unprepared(&statement)
            .await
            .during("create the monolith's tables")?;
    }
    let placeholder = match backend {
        sea_orm::DbBackend::Postgres => "$1",
        _ => "?",
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!("INSERT INTO monolith_schema (id, schema) VALUES (1, {placeholder})"),
        [Value::from(model.schema().text().to_owned())],
    ))
    .await
    .during("record the monolith's schema")?;
    txn.commit().await.during("commit the monolith's tables")
}

async fn recorded_schema(connection: &DatabaseConnection) -> Result<Schema> {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT schema FROM monolith_schema WHERE id = 1",
        ))
        .await
        .during("read the monolith's schema")?
        .ok_or_else(|| Error::Corrupt("monolith_schema holds no schema".to_owned()))?;
    let text: String = row
        .try_get("", "schema")
        .during("read the monolith's schema")?;
    Schema::parse(&text)
        .map_err(|errors| Error::Corrupt(format!("the recorded schema is invalid: {errors}")))
}

fn mismatch(held: &Schema, requested: &Schema) -> Error {
    let describe = |schema: &Schema| {
        if schema == Schema::default_schema() {
            "the default schema".to_owned()
        } else {
            let kinds: Vec<&str> = schema
                .kinds()
                .iter()
                .map(|kind| kind.name.as_str())
                .collect();
            format!("a schema of kinds {}", kinds.join(", "))
        }
    };
    Error::SchemaMismatch {
        held: describe(held),
        requested: describe(requested),
    }
}
