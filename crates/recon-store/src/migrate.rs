//! Schema migrations: applied once per store by [`crate::Store::migrate`]
//! (`recon store migrate`), checked by every [`crate::Store::connect`].
//!
//! A migration may rewrite a big table (adding a generated column does), so
//! it never runs inside a replica's sessions, whose `lock_timeout` (5 s) and
//! `statement_timeout` (60 s) would cut it off, and replicas do not race one
//! another to run it at startup. What a migration promises:
//!
//! * **Once per store** (PostgreSQL): it runs on one dedicated connection
//!   (a pool of one, never recycled) holding the session-level advisory
//!   lock [`MIGRATION_LOCK_KEY`] (advisory locks are per database: stores in
//!   other databases of the same server do not wait for it). The lock is
//!   taken before each step reads which migrations are pending — re-entrant
//!   on the same session; a session that replaced a lost one waits for it
//!   like anyone — so a second migration started meanwhile waits, then finds
//!   nothing left to do. The wait for the lock is unbounded: it does not
//!   hold up the replicas, and the holder's lock goes with its session.
//! * **Safe to cut off** (PostgreSQL): each migration and its row in
//!   `recon_store_migrations` commit in one transaction, so a migration
//!   killed half-way, or ended by a timeout the operator set, leaves the
//!   store as it was before that migration; running the command again
//!   resumes there.
//! * **Not bounded by the replicas' timeouts**: the session starts with
//!   `statement_timeout`, `lock_timeout` and
//!   `idle_in_transaction_session_timeout` off (overriding the database's
//!   and the role's defaults), unless the operator sets a bound
//!   ([`MigrationOptions`]).
//! * **SQLite takes no lock**: a SQLite store is one file on one machine,
//!   opened by one process (the demo, a single replica, a test); SQLite
//!   itself serializes writers on the file. Its migrations are not wrapped
//!   in transactions (sea-orm's default there).
//!
//! [`check`] is what every connection does instead: it compares the applied
//! migrations with the ones this build knows and refuses a store that is
//! behind ([`Error::SchemaBehind`], naming `recon store migrate`) or ahead
//! ([`Error::SchemaAhead`]: a newer recon migrated it — an older build could
//! write rows the newer schema does not expect, so it does not start).

use crate::error::database;
use crate::schema::{MIGRATION_TABLE, Migrator};
use crate::{Error, Result};
use recon_core::schema::Schema;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use sea_orm_migration::{MigratorTrait, SchemaManager};
use std::time::Duration;
use tracing::info;

/// Key of the PostgreSQL advisory lock a migration holds: the ASCII bytes
/// of `reconmig` as a big-endian `i64`.
pub const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"reconmig");

/// How long a migration waits for a SQLite database lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Session settings of a migration ([`crate::Store::migrate`]).
///
/// Unlike a replica's sessions ([`crate::StoreOptions`]), a migration
/// session has no statement timeout and no lock timeout unless one is set
/// here: a migration that rewrites a big table takes as long as it takes,
/// and one that needs a table lock waits for the transactions holding it.
/// Bounds are for migrating while replicas run: a migration waiting for a
/// table lock queues the replicas' statements on that table behind it
/// (they fail after their own `lock_timeout` and are retried), so an
/// operator may prefer that the migration gives up after, say, 10 s and is
/// run again later. No effect on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationOptions {
    /// Longest run of one statement (PostgreSQL `statement_timeout`);
    /// `None` (the default): no limit.
    pub statement_timeout: Option<Duration>,
    /// Longest wait for a table or row lock (PostgreSQL `lock_timeout`);
    /// `None` (the default): wait. The wait for the migration lock itself
    /// is never bounded.
    pub lock_timeout: Option<Duration>,
}

impl MigrationOptions {
    /// The settings a migration session starts with on PostgreSQL.
    fn postgres_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("statement_timeout", bound(self.statement_timeout)),
            ("lock_timeout", bound(self.lock_timeout)),
            ("idle_in_transaction_session_timeout", "0".to_owned()),
        ]
    }
}

/// A timeout as a PostgreSQL setting: milliseconds, or `0` (off) for none.
fn bound(timeout: Option<Duration>) -> String {
    match timeout {
        Some(duration) => crate::millis(duration),
        None => "0".to_owned(),
    }
}

/// Applies every pending migration, one at a time, and returns their names.
pub(crate) async fn run(
    database_url: &str,
    options: MigrationOptions,
    data_model: &Schema,
) -> Result<Vec<String>> {
    let mut connect = crate::connect_options(
        database_url,
        options.postgres_settings(),
        SQLITE_BUSY_TIMEOUT,
    );
    connect
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None);
    let connection = crate::open(database_url, connect).await?;
    let mut outcome = apply_pending(&connection).await;
    // Still under the lock (it goes with the session): the kinds' tables.
    if let Ok(applied) = &mut outcome {
        match crate::data_model::evolve(&connection, data_model).await {
            Ok(done) => applied.extend(done.into_iter().map(|line| format!("tables: {line}"))),
            Err(error) => outcome = Err(error),
        }
    }
    // Ending the session releases the advisory lock.
    let _ = connection.close().await;
    outcome
}

/// The migration loop: take the lock, read what is pending, apply the
/// first pending migration, until nothing is pending.
async fn apply_pending(connection: &DatabaseConnection) -> Result<Vec<String>> {
    let known = known_migrations();
    let mut applied = Vec::new();
    loop {
        if connection.get_database_backend() == DbBackend::Postgres {
            take_lock(connection).await?;
        }
        let recorded = applied_migrations(connection).await?;
        let Some(next) = pending(&known, &recorded)?.into_iter().next() else {
            return Ok(applied);
        };
        info!(migration = %next, "applying migration");
        // Under the lock, the first pending migration is `next`.
        Migrator::up(connection, Some(1))
            .await
            .map_err(|source| Error::Migrate {
                migration: next.clone(),
                source,
            })?;
        applied.push(next);
    }
}

/// Takes the session-level advisory lock (re-entrant: a no-op wait on the
/// session that holds it), without the session's timeouts: `SET LOCAL`
/// lasts until the end of the transaction, the lock until the end of the
/// session.
async fn take_lock(connection: &DatabaseConnection) -> Result<()> {
    const TAKE_LOCK: &str = "take the migration lock";
    let transaction = connection.begin().await.map_err(database(TAKE_LOCK))?;
    transaction
        .execute_unprepared("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
        .await
        .map_err(database(TAKE_LOCK))?;
    let taken = transaction
        .query_one_raw(lock_statement("pg_try_advisory_lock"))
        .await
        .map_err(database(TAKE_LOCK))?
        .ok_or_else(|| {
            database(TAKE_LOCK)(DbErr::RecordNotFound("pg_try_advisory_lock".to_owned()))
        })?
        .try_get::<bool>("", "taken")
        .map_err(database(TAKE_LOCK))?;
    if !taken {
        info!("another migration holds the store's migration lock; waiting for it");
        transaction
            .execute_raw(lock_statement("pg_advisory_lock"))
            .await
            .map_err(database(TAKE_LOCK))?;
    }
    transaction.commit().await.map_err(database(TAKE_LOCK))
}

/// `SELECT <function>(MIGRATION_LOCK_KEY) AS taken`.
fn lock_statement(function: &str) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("SELECT {function}($1) AS taken"),
        [MIGRATION_LOCK_KEY.into()],
    )
}

/// Checks that the store's schema is the one this build knows (see the
/// module's documentation).
pub(crate) async fn check(connection: &DatabaseConnection) -> Result<()> {
    let missing = pending(&known_migrations(), &applied_migrations(connection).await?)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::SchemaBehind { missing })
    }
}

/// The names of the migrations this build knows, in the order they apply.
fn known_migrations() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|migration| migration.name().to_owned())
        .collect()
}

/// The names of the migrations the store records as applied (none when it
/// has no migration table: an empty database). Reads only.
async fn applied_migrations(connection: &DatabaseConnection) -> Result<Vec<String>> {
    const READ_APPLIED: &str = "read the applied migrations";
    let exists = SchemaManager::new(connection)
        .has_table(MIGRATION_TABLE)
        .await
        .map_err(database(READ_APPLIED))?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            format!("SELECT version FROM {MIGRATION_TABLE} ORDER BY version"),
        ))
        .await
        .map_err(database(READ_APPLIED))?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        names.push(
            row.try_get::<String>("", "version")
                .map_err(database(READ_APPLIED))?,
        );
    }
    Ok(names)
}

/// The migrations of `known` that `applied` lacks, in `known`'s order; or
/// [`Error::SchemaAhead`] when `applied` holds migrations `known` lacks.
fn pending(known: &[String], applied: &[String]) -> Result<Vec<String>> {
    let unknown: Vec<String> = applied
        .iter()
        .filter(|name| !known.contains(name))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(Error::SchemaAhead { unknown });
    }
    Ok(known
        .iter()
        .filter(|name| !applied.contains(name))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn an_empty_store_is_missing_every_migration_in_order() {
        let known = names(&["m0001_a", "m0002_b", "m0003_c"]);
        let missing = pending(&known, &[]).expect("behind, not ahead");
        assert_eq!(missing, known);
    }

    #[test]
    fn a_store_missing_the_latest_migrations_lists_them() {
        let known = names(&["m0001_a", "m0002_b", "m0003_c"]);
        let missing = pending(&known, &names(&["m0002_b", "m0001_a"])).expect("behind");
        assert_eq!(missing, names(&["m0003_c"]));
        assert!(pending(&known, &known).expect("up to date").is_empty());
    }

    #[test]
    fn a_store_with_an_unknown_migration_is_ahead_even_when_also_behind() {
        let known = names(&["m0001_a", "m0002_b"]);
        let error = pending(&known, &names(&["m0001_a", "m0009_z"])).expect_err("ahead");
        assert!(
            matches!(&error, Error::SchemaAhead { unknown } if *unknown == names(&["m0009_z"])),
            "{error:?}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::Permanent);
    }

    #[test]
    fn the_behind_message_names_the_missing_migrations_and_the_command() {
        let message = Error::SchemaBehind {
            missing: names(&["m0006_x", "m0007_y"]),
        }
        .to_string();
        assert!(message.contains("m0006_x, m0007_y"), "{message}");
        assert!(message.contains("`recon store migrate`"), "{message}");
        assert_eq!(
            Error::SchemaBehind { missing: vec![] }.kind(),
            crate::ErrorKind::Permanent
        );
    }

    #[test]
    fn the_migrations_this_build_knows_have_unique_names() {
        let known = known_migrations();
        let mut unique = known.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), known.len());
        assert_eq!(
            known.first().map(String::as_str),
            Some("m0001_initial_schema")
        );
    }

    #[test]
    fn a_migration_session_has_no_timeouts_unless_given() {
        let unbounded = MigrationOptions::default().postgres_settings();
        for name in [
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
        ] {
            assert!(
                unbounded.contains(&(name, "0".to_owned())),
                "{name}: {unbounded:?}"
            );
        }
        let bounded = MigrationOptions {
            statement_timeout: Some(Duration::from_secs(1800)),
            lock_timeout: Some(Duration::from_millis(1)),
        }
        .postgres_settings();
        assert!(bounded.contains(&("statement_timeout", "1800000".to_owned())));
        assert!(bounded.contains(&("lock_timeout", "1".to_owned())));
    }
}
