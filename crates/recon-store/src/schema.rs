//! Schema of the replica store and its migrations.
//!
//! One table per kind. Every row carries its version (`generation`,
//! `sequence`) and a tombstone flag: a deleted entity keeps its row, with the deletion's
//! version, until [`crate::Store::purge_tombstones`] removes it after the
//! retention window. Id columns sort byte-wise (`COLLATE "C"` on PostgreSQL;
//! SQLite's default collation already is).
//!
//! * `fences(scope, epoch)`: highest reconciliation epoch seen per scope;
//! * `generation_floors(scope, generation)`: events of an older generation
//!   are skipped (scope = tenant id, or `*` for the whole store);
//! * `dead_letters(topic, kafka_partition, kafka_offset, …)`: records the
//!   consumer refused for their content, with key, payload and error;
//! * `store_upkeep(task, last_run_ms)`: when a periodic upkeep task (the
//!   tombstone purge) last ran, claimed by one replica per interval;
//! * on PostgreSQL, `digest` in the users, groups and memberships tables:
//!   each row's range-digest element ([`recon_core::digest`]), a column the
//!   database generates from the row's own columns — also when a row is
//!   changed behind recon's back — so that a range's digest is an aggregate;
//! * `epoch_claims(singleton, incarnation, election)`: the latest election
//!   that acquired an epoch (one row), so an older one cannot acquire after
//!   it;
//! * `reconcile_runs(run_id, started_ms, ended_ms, summary, units)`: the run
//!   history, one JSON record per finished run (see `history.rs`).

use recon_core::Kind;
use recon_core::schema::Schema;
use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// The table recording the applied migrations (one row per migration name).
pub(crate) const MIGRATION_TABLE: &str = "recon_store_migrations";

/// Migrations of the replica store, in the order they apply. Applied by
/// [`crate::Store::migrate`] only (see `migrate.rs`).
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(InitialSchema),
            Box::new(DeadLettersAndUpkeep),
            Box::new(EpochClaims),
            Box::new(DigestColumns),
            Box::new(RunHistory),
            Box::new(InlinableDigestFunctions),
            Box::new(Incarnations),
            Box::new(DataModelRecord),
            Box::new(DropRowHash),
        ]
    }

    fn migration_table_name() -> DynIden {
        MIGRATION_TABLE.into_iden()
    }
}

struct InitialSchema;

impl MigrationName for InitialSchema {
    fn name(&self) -> &str {
        "m0001_initial_schema"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for InitialSchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        let backend = manager.get_database_backend();
        let id_type = match backend {
            DbBackend::Postgres => "TEXT COLLATE \"C\" NOT NULL",
            _ => "TEXT NOT NULL",
        };
        // The kinds' tables are the declared schema's (`data_model.rs`):
        // stores created before schemas were declared got the default
        // schema's tables here.
        connection
            .execute_unprepared(&format!(
                "CREATE TABLE IF NOT EXISTS fences (scope {id_type} PRIMARY KEY, epoch BIGINT NOT NULL)"
            ))
            .await?;
        connection
            .execute_unprepared(&format!(
                "CREATE TABLE IF NOT EXISTS generation_floors (scope {id_type} PRIMARY KEY, generation BIGINT NOT NULL)"
            ))
            .await?;
        Ok(())
    }
}

struct DeadLettersAndUpkeep;

impl MigrationName for DeadLettersAndUpkeep {
    fn name(&self) -> &str {
        "m0002_dead_letters_and_upkeep"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for DeadLettersAndUpkeep {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        let (id_type, bytes_type) = match manager.get_database_backend() {
            DbBackend::Postgres => ("TEXT COLLATE \"C\" NOT NULL", "BYTEA"),
            _ => ("TEXT NOT NULL", "BLOB"),
        };
        connection
            .execute_unprepared(&format!(
                "CREATE TABLE IF NOT EXISTS dead_letters (\n  \
                 topic {id_type},\n  \
                 kafka_partition BIGINT NOT NULL,\n  \
                 kafka_offset BIGINT NOT NULL,\n  \
                 record_key {bytes_type},\n  \
                 payload {bytes_type},\n  \
                 error TEXT NOT NULL,\n  \
                 dead_at_ms BIGINT NOT NULL,\n  \
                 PRIMARY KEY (topic, kafka_partition, kafka_offset)\n)"
            ))
            .await?;
        connection
            .execute_unprepared(&format!(
                "CREATE TABLE IF NOT EXISTS store_upkeep (task {id_type} PRIMARY KEY, last_run_ms BIGINT NOT NULL)"
            ))
            .await?;
        connection
            .execute_unprepared(
                "INSERT INTO store_upkeep (task, last_run_ms) VALUES ('purge_tombstones', 0) \
                 ON CONFLICT (task) DO NOTHING",
            )
            .await?;
        Ok(())
    }
}

/// The election that last acquired an epoch (see [`crate::Store::acquire_epoch`]).
struct EpochClaims;

impl MigrationName for EpochClaims {
    fn name(&self) -> &str {
        "m0003_epoch_claims"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for EpochClaims {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS epoch_claims (singleton INTEGER PRIMARY KEY, \
                 incarnation BIGINT NOT NULL, election BIGINT NOT NULL)",
            )
            .await?;
        Ok(())
    }
}

/// Range digests (PostgreSQL only; SQLite has no SHA-256 in SQL and hashes
/// rows as it reads them instead).
struct DigestColumns;

impl MigrationName for DigestColumns {
    fn name(&self) -> &str {
        "m0004_digest_columns"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for DigestColumns {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let connection = manager.get_connection();
        // The default schema's scoped tables: the only ones a store had
        // when this migration was written.
        let tables: Vec<(&str, Kind)> = Schema::default_schema()
            .kinds()
            .iter()
            .filter(|kind| kind.scoped)
            .map(|kind| (kind.table.as_str(), Kind::named(&kind.name)))
            .collect();
        for statement in recon_core::digest::postgres_digest_columns(&tables) {
            connection.execute_unprepared(&statement).await?;
        }
        Ok(())
    }
}

/// The run history (`Store::record_run`).
struct RunHistory;

impl MigrationName for RunHistory {
    fn name(&self) -> &str {
        "m0005_reconcile_runs"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for RunHistory {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id_type = match manager.get_database_backend() {
            DbBackend::Postgres => "TEXT COLLATE \"C\" NOT NULL",
            _ => "TEXT NOT NULL",
        };
        let connection = manager.get_connection();
        connection
            .execute_unprepared(&format!(
                "CREATE TABLE IF NOT EXISTS reconcile_runs (\n  \
                 run_id {id_type} PRIMARY KEY,\n  \
                 started_ms BIGINT NOT NULL,\n  \
                 ended_ms BIGINT NOT NULL,\n  \
                 summary TEXT NOT NULL,\n  \
                 units TEXT NOT NULL\n)"
            ))
            .await?;
        connection
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS reconcile_runs_started ON reconcile_runs (started_ms)",
            )
            .await?;
        Ok(())
    }
}

/// The digest functions redefined so that PostgreSQL inlines them into the
/// generated columns (same values, no table rewrite; see
/// [`recon_core::digest::POSTGRES_FUNCTIONS`]): computing a row's element
/// took 13.5 µs a user row through the first definition's function calls,
/// 3 µs inlined — paid by every row the store writes.
struct InlinableDigestFunctions;

impl MigrationName for InlinableDigestFunctions {
    fn name(&self) -> &str {
        "m0006_inlinable_digest_functions"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for InlinableDigestFunctions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(recon_core::digest::POSTGRES_FUNCTIONS)
                .await?;
        }
        Ok(())
    }
}

/// The last coordinator incarnation handed out (see
/// [`crate::Store::next_incarnation`]).
struct Incarnations;

impl MigrationName for Incarnations {
    fn name(&self) -> &str {
        "m0007_incarnations"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Incarnations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS incarnations (singleton INTEGER PRIMARY KEY, \
                 last BIGINT NOT NULL)",
            )
            .await?;
        Ok(())
    }
}

/// The declared schema a store holds (see `data_model.rs`): one row with
/// the schema file's text. A store created before schemas were declared
/// holds the default schema's tables, and is recorded as holding it.
struct DataModelRecord;

impl MigrationName for DataModelRecord {
    fn name(&self) -> &str {
        "m0008_data_model"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for DataModelRecord {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared(
                "CREATE TABLE IF NOT EXISTS recon_data_model (singleton INTEGER PRIMARY KEY, \
                 schema_toml TEXT NOT NULL)",
            )
            .await?;
        if manager
            .has_table(Schema::default_schema().scope().table.as_str())
            .await?
        {
            let backend = manager.get_database_backend();
            let placeholder = if backend == DbBackend::Postgres {
                "$1"
            } else {
                "?"
            };
            connection
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    backend,
                    format!(
                        "INSERT INTO recon_data_model (singleton, schema_toml) \
                         VALUES (1, {placeholder}) ON CONFLICT (singleton) DO NOTHING"
                    ),
                    [recon_core::schema::DEFAULT_SCHEMA_TOML.into()],
                ))
                .await?;
        }
        Ok(())
    }
}

/// Drops the `row_hash` column every kind's table had: the hash of a row's
/// data as written, computed (a SHA-256) on every apply and read by nothing.
/// The digest element is the row's fingerprint. Metadata only on
/// PostgreSQL; SQLite rewrites the table.
struct DropRowHash;

impl MigrationName for DropRowHash {
    fn name(&self) -> &str {
        "m0009_drop_row_hash"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for DropRowHash {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        // The tables of the schema the store holds (none yet: a fresh store
        // gets its tables after the migrations, without the column).
        let held = connection
            .query_one_raw(sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT schema_toml FROM recon_data_model WHERE singleton = 1",
            ))
            .await?;
        let Some(row) = held else {
            return Ok(());
        };
        let text: String = row.try_get("", "schema_toml")?;
        let schema = Schema::parse(&text)
            .map_err(|errors| DbErr::Migration(format!("the schema the store holds: {errors}")))?;
        for kind in schema.kinds() {
            if manager.has_column(&kind.table, "row_hash").await? {
                connection
                    .execute_unprepared(&format!("ALTER TABLE {} DROP COLUMN row_hash", kind.table))
                    .await?;
            }
        }
        Ok(())
    }
}
