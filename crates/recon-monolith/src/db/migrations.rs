//! Schema migrations of the monolith's database (sea-orm-migration).
//!
//! The schema is written as SQL once and specialised per backend: ids are
//! `TEXT COLLATE "C"` on PostgreSQL so that they sort byte-wise, like
//! SQLite's default `BINARY` collation already does.

use crate::ddl::{COMMON_TABLES, statements_of};
use recon_core::Kind;
use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_query::{Alias, IntoIden};

/// Runs the monolith's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(InitialSchema),
            Box::new(DigestColumns),
            Box::new(DigestIndexes),
            Box::new(InlinableDigestFunctions),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("monolith_migrations").into_iden()
    }
}

/// The first schema: data tables, meta counter, outbox, backups.
struct InitialSchema;

impl MigrationName for InitialSchema {
    fn name(&self) -> &str {
        "m0001_initial_schema"
    }
}

/// The default schema's data tables as m0001 created them (after the
/// common tables, [`crate::ddl::COMMON_TABLES`]); `crate::ddl` generates
/// the same from the default schema.
const DEFAULT_DATA_TABLES: &str = r#"
CREATE TABLE tenants (
    id {ID} NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL
);
CREATE TABLE users (
    tenant_id {ID} NOT NULL REFERENCES tenants (id),
    id {ID} NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE "groups" (
    tenant_id {ID} NOT NULL REFERENCES tenants (id),
    id {ID} NOT NULL,
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE memberships (
    tenant_id {ID} NOT NULL,
    group_id {ID} NOT NULL,
    user_id {ID} NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES "groups" (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX memberships_by_user ON memberships (tenant_id, user_id);
CREATE TABLE backup_tenants (
    backup_id BIGINT NOT NULL REFERENCES backups (id),
    id {ID} NOT NULL,
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (backup_id, id)
);
CREATE TABLE backup_users (
    backup_id BIGINT NOT NULL REFERENCES backups (id),
    tenant_id {ID} NOT NULL,
    id {ID} NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (backup_id, tenant_id, id)
);
CREATE TABLE backup_groups (
    backup_id BIGINT NOT NULL REFERENCES backups (id),
    tenant_id {ID} NOT NULL,
    id {ID} NOT NULL,
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (backup_id, tenant_id, id)
);
CREATE TABLE backup_memberships (
    backup_id BIGINT NOT NULL REFERENCES backups (id),
    tenant_id {ID} NOT NULL,
    group_id {ID} NOT NULL,
    user_id {ID} NOT NULL,
    generation BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (backup_id, tenant_id, group_id, user_id)
)
"#;

/// The initial schema's statements for one backend: the common tables,
/// then the default schema's data tables.
pub(crate) fn initial_schema_statements(backend: DbBackend) -> Vec<String> {
    let mut statements = statements_of(COMMON_TABLES, backend);
    statements.extend(statements_of(DEFAULT_DATA_TABLES, backend));
    statements
}

#[async_trait::async_trait]
impl MigrationTrait for InitialSchema {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in initial_schema_statements(manager.get_database_backend()) {
            connection.execute_unprepared(&statement).await?;
        }
        Ok(())
    }
}

/// Range digests (PostgreSQL only): each data table keeps its rows'
/// digest element in a generated column, computed by the database from the
/// row's own columns in the transaction that writes it.
struct DigestColumns;

impl MigrationName for DigestColumns {
    fn name(&self) -> &str {
        "m0002_digest_columns"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DigestColumns {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let connection = manager.get_connection();
        let tables = [
            ("users", Kind::USER),
            ("\"groups\"", Kind::GROUP),
            ("memberships", Kind::MEMBERSHIP),
        ];
        for statement in recon_core::digest::postgres_digest_columns(&tables) {
            connection.execute_unprepared(&statement).await?;
        }
        Ok(())
    }
}

/// Covering indexes for range digests (PostgreSQL only): each data
/// table's key with its digest element, so that splitting a tenant's rows
/// into buckets is an index-only scan in key order — no heap access and no
/// sort (the split of a 67k-row tenant into 4k buckets took 112 ms with a
/// bitmap heap scan and a sort spilling to disk, 64 ms from the index).
struct DigestIndexes;

impl MigrationName for DigestIndexes {
    fn name(&self) -> &str {
        "m0003_digest_indexes"
    }
}

/// The statements of m0003.
pub(crate) const DIGEST_INDEXES: [&str; 3] = [
    "CREATE INDEX IF NOT EXISTS users_digest ON users (tenant_id, id) INCLUDE (digest)",
    "CREATE INDEX IF NOT EXISTS groups_digest ON \"groups\" (tenant_id, id) INCLUDE (digest)",
    "CREATE INDEX IF NOT EXISTS memberships_digest ON memberships (tenant_id, group_id, user_id) INCLUDE (digest)",
];

#[async_trait::async_trait]
impl MigrationTrait for DigestIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let connection = manager.get_connection();
        for statement in DIGEST_INDEXES {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}

/// The digest functions redefined so that PostgreSQL inlines them into the
/// generated columns (same values, no table rewrite; see
/// [`recon_core::digest::POSTGRES_FUNCTIONS`]): computing a row's element
/// took 13.5 µs a user row through the first definition's function calls,
/// 3 µs inlined — paid by every row the monolith writes.
struct InlinableDigestFunctions;

impl MigrationName for InlinableDigestFunctions {
    fn name(&self) -> &str {
        "m0004_inlinable_digest_functions"
    }
}

#[async_trait::async_trait]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_ids_sort_bytewise() {
        let statements = initial_schema_statements(DbBackend::Postgres);
        let tenants = statements
            .iter()
            .find(|statement| statement.starts_with("CREATE TABLE tenants"))
            .expect("tenants table");
        assert!(tenants.contains(r#"id TEXT COLLATE "C" NOT NULL"#));
        let sqlite = initial_schema_statements(DbBackend::Sqlite);
        assert!(
            sqlite
                .iter()
                .all(|statement| !statement.contains("COLLATE"))
        );
        assert!(sqlite.iter().all(|statement| !statement.contains('{')));
    }
}
