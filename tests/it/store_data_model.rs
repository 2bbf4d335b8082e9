//! The declared schema a replica store holds: created by `recon store
//! migrate` in a fresh store, recorded for a store made before schemas were
//! declared, evolved by the changes a running system can take, and checked
//! by every connection.

use anyhow::{Context, ensure};
use recon_core::schema::Schema;
use recon_store::{Error, MigrationOptions, Store};
use recon_tests::process::recon_binary;
use recon_tests::{Backend, TestDatabase, migrate_store};
use sea_orm::{ConnectionTrait, Database};

const CATALOG: &str = include_str!("../../proto/schemas/catalog.toml");

/// The default schema with a nullable field added to users and a kind
/// added at the end.
fn evolved_default() -> Schema {
    let text = recon_core::schema::DEFAULT_SCHEMA_TOML.replacen(
        "    { name = \"status\", type = \"enum\", values = [\"active\", \"disabled\"] },\n",
        "    { name = \"status\", type = \"enum\", values = [\"active\", \"disabled\"] },\n    { name = \"nickname\", type = \"text\", nullable = true },\n",
        1,
    ) + "\n[[kind]]\nname = \"team\"\nplural = \"teams\"\ntable = \"replica_teams\"\nkey = [\"id\"]\n";
    Schema::parse(&text).expect("the evolved default schema is valid")
}

async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let connection = Database::connect(url).await?;
    connection
        .execute_unprepared(sql)
        .await
        .with_context(|| sql.to_owned())?;
    Ok(())
}

async fn one_number(url: &str, sql: &str) -> anyhow::Result<i64> {
    let connection = Database::connect(url).await?;
    let row = connection
        .query_one_raw(sea_orm::Statement::from_string(
            connection.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index(0)?)
}

async fn a_store_made_before_schemas_holds_the_default_schema(
    backend: Backend,
) -> anyhow::Result<()> {
    // What recon before declared schemas left: m0001–m0007 and the default
    // schema's tables, each with the `row_hash` column it wrote on every
    // apply, with a row.
    let database = TestDatabase::replica_store(backend).await?;
    execute(&database.url, "DROP TABLE recon_data_model").await?;
    execute(
        &database.url,
        "DELETE FROM recon_store_migrations WHERE version IN ('m0008_data_model', 'm0009_drop_row_hash')",
    )
    .await?;
    for kind in Schema::default_schema().kinds() {
        execute(
            &database.url,
            &format!(
                "ALTER TABLE {} ADD COLUMN row_hash TEXT NOT NULL DEFAULT ''",
                kind.table
            ),
        )
        .await?;
    }
    execute(
        &database.url,
        "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, \
         sequence, row_hash, deleted) VALUES ('t1', 'u1', 'u1@example.test', 'U', 'active', 1, 1, \
         'h', false)",
    )
    .await?;
    ensure!(
        Store::connect(&database.url).await.is_err(),
        "a replica refuses the store before it is migrated"
    );
    let applied = migrate_store(&database.url).await?;
    ensure!(
        applied == ["m0008_data_model", "m0009_drop_row_hash"],
        "{applied:?}"
    );
    Store::connect(&database.url).await?;
    ensure!(one_number(&database.url, "SELECT count(*) FROM replica_users").await? == 1);
    for kind in Schema::default_schema().kinds() {
        let read = execute(
            &database.url,
            &format!("SELECT row_hash FROM {}", kind.table),
        )
        .await;
        ensure!(read.is_err(), "{} still has row_hash", kind.table);
    }
    Ok(())
}

async fn a_fresh_store_takes_another_schema_which_a_default_replica_refuses(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = TestDatabase::create(backend).await?;
    let catalog = Schema::parse(CATALOG).expect("valid");
    let applied = Store::migrate_to(&database.url, MigrationOptions::default(), &catalog).await?;
    ensure!(
        applied.last().map(String::as_str)
            == Some("tables: created the tables of 5 kinds in scope \"shop\""),
        "{applied:?}"
    );
    ensure!(one_number(&database.url, "SELECT count(*) FROM catalog_products").await? == 0);
    let absent = one_number(&database.url, "SELECT count(*) FROM replica_users").await;
    ensure!(
        absent.is_err(),
        "a catalog store got the default schema's tables"
    );
    let error = Store::connect(&database.url)
        .await
        .err()
        .context("a default-schema replica accepted a catalog store")?;
    ensure!(matches!(error, Error::DataModelRefused(_)), "{error:?}");
    ensure!(
        error
            .to_string()
            .contains("the scope kind changed from \"shop\" to \"tenant\""),
        "{error}"
    );
    Ok(())
}

async fn added_kinds_and_fields_evolve_the_store_and_an_older_replica_refuses_it(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = TestDatabase::replica_store(backend).await?;
    execute(
        &database.url,
        "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, \
         sequence, deleted) VALUES ('t1', 'u1', 'u1@example.test', 'U', 'active', 1, 1, \
         false)",
    )
    .await?;
    let evolved = evolved_default();
    let applied = Store::migrate_to(&database.url, MigrationOptions::default(), &evolved).await?;
    ensure!(
        applied
            == [
                "tables: add field \"nickname\" to kind \"user\"",
                "tables: add kind \"team\" (table replica_teams)"
            ],
        "{applied:?}"
    );
    ensure!(
        one_number(
            &database.url,
            "SELECT count(*) FROM replica_users WHERE nickname IS NULL"
        )
        .await?
            == 1,
        "the existing row reads NULL in the new field"
    );
    ensure!(one_number(&database.url, "SELECT count(*) FROM replica_teams").await? == 0);
    let again = Store::migrate_to(&database.url, MigrationOptions::default(), &evolved).await?;
    ensure!(again.is_empty(), "{again:?}");
    let error = Store::connect(&database.url)
        .await
        .err()
        .context("a replica of the older schema accepted the evolved store")?;
    ensure!(matches!(error, Error::DataModelAhead { .. }), "{error:?}");
    ensure!(error.to_string().contains("add kind \"team\""), "{error}");
    Ok(())
}

async fn a_change_the_store_cannot_take_is_refused_and_nothing_changes(
    backend: Backend,
) -> anyhow::Result<()> {
    let database = TestDatabase::replica_store(backend).await?;
    let retyped = Schema::parse(&recon_core::schema::DEFAULT_SCHEMA_TOML.replacen(
        "{ name = \"email\", type = \"text\" }",
        "{ name = \"email\", type = \"integer\" }",
        1,
    ))
    .expect("valid");
    let error = Store::migrate_to(&database.url, MigrationOptions::default(), &retyped)
        .await
        .err()
        .context("a retyped field was migrated")?;
    ensure!(
        error
            .to_string()
            .contains("kind \"user\", field \"email\": type changed from text to integer"),
        "{error}"
    );
    Store::connect(&database.url).await?;
    Ok(())
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(recon_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(recon_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    a_store_made_before_schemas_holds_the_default_schema,
    a_fresh_store_takes_another_schema_which_a_default_replica_refuses,
    added_kinds_and_fields_evolve_the_store_and_an_older_replica_refuses_it,
    a_change_the_store_cannot_take_is_refused_and_nothing_changes,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recon_store_migrate_names_a_schema_change_it_refuses() -> anyhow::Result<()> {
    let database = TestDatabase::replica_store(Backend::Postgres).await?;
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/schemas/catalog.toml");
    let output = tokio::process::Command::new(recon_binary()?)
        .args([
            "store",
            "migrate",
            "--database-url",
            &database.url,
            "--schema",
            catalog,
        ])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(2), "{stderr}");
    ensure!(
        stderr.contains("the schema cannot change this way")
            && stderr.contains("the scope kind changed from \"tenant\" to \"shop\""),
        "{stderr}"
    );
    Ok(())
}
