//! The declared schema a store holds: its kinds' tables, created and
//! evolved by `recon store migrate` (under the migration lock, see
//! `migrate.rs`), and checked by every connection.
//!
//! `recon_data_model` keeps the schema file's text. A store created before
//! schemas were declared holds the default schema (recorded by the
//! migration that made the table); a fresh store holds none until its first
//! migration creates the requested schema's tables. Moving from the held
//! schema to a requested one takes only the changes
//! [`evolution::compare`] accepts ([`crate::evolution_ddl`]); any other is
//! refused, naming the change.

use crate::error::database;
use crate::{Error, Result, evolution_ddl, schema_ddl};
use recon_core::schema::{Schema, evolution};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

/// Brings the store's tables to `requested` and records it; returns what
/// was done, one line each (nothing when the store already held it).
pub(crate) async fn evolve(
    connection: &DatabaseConnection,
    requested: &Schema,
) -> Result<Vec<String>> {
    let backend = connection.get_database_backend();
    let (statements, done) = match held(connection).await? {
        None => (
            schema_ddl(requested, backend),
            vec![format!(
                "created the tables of {} kinds in scope {:?}",
                requested.kinds().len(),
                requested.scope().name
            )],
        ),
        Some(held) => {
            let changes = evolution::compare(&held, requested).map_err(Error::DataModelRefused)?;
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            let done = changes.iter().map(describe).collect();
            (evolution_ddl(requested, &changes, backend), done)
        }
    };
    const EVOLVE: &str = "evolve the store's tables";
    // PostgreSQL runs DDL in transactions: the tables and the record
    // change together or not at all.
    let transaction = connection.begin().await.map_err(database(EVOLVE))?;
    for statement in statements {
        transaction
            .execute_unprepared(&statement)
            .await
            .map_err(database(EVOLVE))?;
    }
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO recon_data_model (singleton, schema_toml) VALUES (1, {placeholder}) \
                 ON CONFLICT (singleton) DO UPDATE SET schema_toml = excluded.schema_toml"
            ),
            [requested.text().to_owned().into()],
        ))
        .await
        .map_err(database(EVOLVE))?;
    transaction.commit().await.map_err(database(EVOLVE))?;
    Ok(done)
}

/// Checks that the store holds `expected`: refused when it holds none,
/// an older one (run `recon store migrate`), a newer one, or another.
pub(crate) async fn check(connection: &DatabaseConnection, expected: &Schema) -> Result<()> {
    let Some(held) = held(connection).await? else {
        return Err(Error::DataModelBehind {
            changes: vec!["no tables yet".to_owned()],
        });
    };
    match evolution::compare(&held, expected) {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => {
            return Err(Error::DataModelBehind {
                changes: changes.iter().map(describe).collect(),
            });
        }
        Err(refused) => {
            return match evolution::compare(expected, &held) {
                Ok(changes) => Err(Error::DataModelAhead {
                    changes: changes.iter().map(describe).collect(),
                }),
                Err(_) => Err(Error::DataModelRefused(refused)),
            };
        }
    }
    Ok(())
}

/// The schema the store holds, if any.
async fn held(connection: &DatabaseConnection) -> Result<Option<Schema>> {
    const READ: &str = "read the store's schema";
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT schema_toml FROM recon_data_model WHERE singleton = 1",
        ))
        .await
        .map_err(database(READ))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.try_get("", "schema_toml").map_err(database(READ))?;
    Schema::parse(&text)
        .map(Some)
        .map_err(|errors| Error::InvalidData(format!("the schema the store holds: {errors}")))
}

fn describe(change: &evolution::SchemaChange) -> String {
    match change {
        evolution::SchemaChange::AddKind(kind) => {
            format!("add kind {:?} (table {})", kind.name, kind.table)
        }
        evolution::SchemaChange::AddField { kind, field, .. } => {
            format!("add field {:?} to kind {kind:?}", field.name)
        }
    }
}
