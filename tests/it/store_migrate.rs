//! Migrations run once per store, under an advisory lock, never on connect
//! (issue 24, item 6): a fresh or older store is refused by
//! `Store::connect` with a message naming `recon store migrate`; a store
//! migrated by a newer recon is refused too; concurrent migrations apply
//! each migration once; a migration session is bounded neither by the
//! replicas' short timeouts nor by the database's defaults.
//!
//! The oracle is the store's own migration table and PostgreSQL's
//! `pg_locks`, read in plain SQL.

use anyhow::{Context, bail, ensure};
use recon_core::Kind;
use recon_core::ports::EventSink as _;
use recon_store::{Error, ErrorKind, MIGRATION_LOCK_KEY, MigrationOptions, Store};
use recon_tests::process::recon_binary;
use recon_tests::wait::wait_until;
use recon_tests::{Backend, TestDatabase, migrate_store};
use sea_orm::sqlx;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr, Statement};
use std::time::Duration;

/// The first migration and the number of migrations this build knows.
const FIRST_MIGRATION: &str = "m0001_initial_schema";
const KNOWN_MIGRATIONS: usize = 9;
/// What a migration of a fresh store reports: every migration, then the
/// default schema's tables.
const APPLIED_ON_A_FRESH_STORE: usize = KNOWN_MIGRATIONS + 1;
/// The migration that adds generated digest columns: a table rewrite.
const DIGEST_COLUMNS: &str = "m0004_digest_columns";

/// A plain session on `url`, for the tests' own SQL.
async fn plain(url: &str) -> anyhow::Result<DatabaseConnection> {
    Database::connect(url)
        .await
        .context("connect for plain SQL")
}

async fn execute(connection: &DatabaseConnection, sql: &str) -> anyhow::Result<()> {
    connection
        .execute_unprepared(sql)
        .await
        .with_context(|| format!("run {sql}"))?;
    Ok(())
}

async fn count(connection: &impl ConnectionTrait, sql: &str) -> anyhow::Result<i64> {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            sql,
        ))
        .await?
        .with_context(|| format!("no row from {sql}"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// The migration names the store records, sorted.
async fn recorded(url: &str) -> anyhow::Result<Vec<String>> {
    let connection = plain(url).await?;
    let rows = connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT version FROM recon_store_migrations ORDER BY version",
        ))
        .await?;
    let mut names = Vec::new();
    for row in rows {
        names.push(row.try_get::<String>("", "version")?);
    }
    Ok(names)
}

/// The SQLSTATE of a driver error, if the database sent one.
fn sqlstate(error: &DbErr) -> Option<String> {
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) =
        error
    else {
        return None;
    };
    match error.as_ref() {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

async fn a_fresh_store_is_refused_naming_recon_store_migrate(backend: Backend) {
    let database = TestDatabase::create(backend).await.expect("database");
    let error = Store::connect(&database.url)
        .await
        .expect_err("an empty database was accepted as a replica store");
    let message = error.to_string();
    assert!(
        matches!(&error, Error::SchemaBehind { missing } if missing.len() == KNOWN_MIGRATIONS
            && missing[0] == FIRST_MIGRATION),
        "{error:?}"
    );
    assert!(message.contains("`recon store migrate`"), "{message}");
    assert!(message.contains(FIRST_MIGRATION), "{message}");
    assert_eq!(error.kind(), ErrorKind::Permanent, "retrying cannot help");
}

async fn after_migrate_connect_works_and_nothing_is_left_to_apply(backend: Backend) {
    let database = TestDatabase::create(backend).await.expect("database");
    let applied = migrate_store(&database.url).await.expect("migrate");
    assert_eq!(applied.len(), APPLIED_ON_A_FRESH_STORE, "{applied:?}");
    assert_eq!(applied[0], FIRST_MIGRATION);
    assert!(
        applied[KNOWN_MIGRATIONS].starts_with("tables: created"),
        "{applied:?}"
    );
    let mut sorted = applied[..KNOWN_MIGRATIONS].to_vec();
    sorted.sort();
    assert_eq!(recorded(&database.url).await.expect("recorded"), sorted);
    let store = Store::connect(&database.url).await.expect("connect");
    store.check_ready().await.expect("ready");
    let again = migrate_store(&database.url).await.expect("migrate again");
    assert!(again.is_empty(), "applied twice: {again:?}");
}

async fn a_store_one_migration_behind_is_refused_naming_it(backend: Backend) {
    let database = TestDatabase::replica_store(backend)
        .await
        .expect("database");
    let latest = recorded(&database.url)
        .await
        .expect("recorded")
        .pop()
        .expect("a migration");
    let connection = plain(&database.url).await.expect("connect");
    execute(
        &connection,
        &format!("DELETE FROM recon_store_migrations WHERE version = '{latest}'"),
    )
    .await
    .expect("forget the latest migration");
    let error = Store::connect(&database.url)
        .await
        .expect_err("a store behind by one migration was accepted");
    assert!(
        matches!(&error, Error::SchemaBehind { missing } if *missing == [latest.clone()]),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("1 migration not applied ({latest})")),
        "{message}"
    );
    assert!(message.contains("`recon store migrate`"), "{message}");
}

async fn a_store_migrated_by_a_newer_recon_is_refused_by_connect_and_migrate(backend: Backend) {
    let database = TestDatabase::replica_store(backend)
        .await
        .expect("database");
    let connection = plain(&database.url).await.expect("connect");
    execute(
        &connection,
        "INSERT INTO recon_store_migrations (version, applied_at) VALUES ('m9999_from_the_future', 0)",
    )
    .await
    .expect("record a migration this build does not know");
    for (what, error) in [
        (
            "connect",
            Store::connect(&database.url).await.expect_err("accepted"),
        ),
        (
            "migrate",
            Store::migrate(&database.url, MigrationOptions::default())
                .await
                .expect_err("migrated"),
        ),
    ] {
        assert!(
            matches!(&error, Error::SchemaAhead { unknown } if *unknown == ["m9999_from_the_future"]),
            "{what}: {error:?}"
        );
        assert!(error.to_string().contains("newer recon"), "{what}: {error}");
        assert_eq!(error.kind(), ErrorKind::Permanent, "{what}");
    }
}

mod sqlite {
    use recon_tests::Backend::Sqlite;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_store_is_refused_naming_recon_store_migrate() {
        super::a_fresh_store_is_refused_naming_recon_store_migrate(Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_migrate_connect_works_and_nothing_is_left_to_apply() {
        super::after_migrate_connect_works_and_nothing_is_left_to_apply(Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_one_migration_behind_is_refused_naming_it() {
        super::a_store_one_migration_behind_is_refused_naming_it(Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_migrated_by_a_newer_recon_is_refused_by_connect_and_migrate() {
        super::a_store_migrated_by_a_newer_recon_is_refused_by_connect_and_migrate(Sqlite).await;
    }
}

mod postgres {
    use recon_tests::Backend::Postgres;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_store_is_refused_naming_recon_store_migrate() {
        super::a_fresh_store_is_refused_naming_recon_store_migrate(Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_migrate_connect_works_and_nothing_is_left_to_apply() {
        super::after_migrate_connect_works_and_nothing_is_left_to_apply(Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_one_migration_behind_is_refused_naming_it() {
        super::a_store_one_migration_behind_is_refused_naming_it(Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_migrated_by_a_newer_recon_is_refused_by_connect_and_migrate() {
        super::a_store_migrated_by_a_newer_recon_is_refused_by_connect_and_migrate(Postgres).await;
    }
}

/// Four migrations started at once on one PostgreSQL store all succeed;
/// the first to take the lock applies every migration (it holds the lock
/// for the whole migration, not per step) and the others find nothing to
/// do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_each_migration_exactly_once() -> anyhow::Result<()> {
    let database = TestDatabase::create(Backend::Postgres).await?;
    let mut migrations = Vec::new();
    for _ in 0..4 {
        let url = database.url.clone();
        migrations.push(tokio::spawn(async move {
            Store::migrate(&url, MigrationOptions::default()).await
        }));
    }
    let mut outcomes = Vec::new();
    for migration in migrations {
        outcomes.push(migration.await?.context("a concurrent migration failed")?);
    }
    let applied_all = outcomes
        .iter()
        .filter(|applied| applied.len() == APPLIED_ON_A_FRESH_STORE)
        .count();
    let applied_none = outcomes.iter().filter(|applied| applied.is_empty()).count();
    ensure!(
        applied_all == 1 && applied_none == 3,
        "the migrations were shared out: {outcomes:?}"
    );
    ensure!(recorded(&database.url).await?.len() == KNOWN_MIGRATIONS);
    Store::connect(&database.url).await?;
    Ok(())
}

/// While another session holds the migration lock, a migration waits for
/// it and applies nothing; once released, it applies everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_the_lock_before_reading_or_writing() -> anyhow::Result<()> {
    let database = TestDatabase::create(Backend::Postgres).await?;
    let holder_connection = plain(&database.url).await?;
    let holder = sea_orm::TransactionTrait::begin(&holder_connection).await?;
    holder
        .execute_raw(Statement::from_sql_and_values(
            holder.get_database_backend(),
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
    let url = database.url.clone();
    let migration =
        tokio::spawn(async move { Store::migrate(&url, MigrationOptions::default()).await });
    let observer = plain(&database.url).await?;
    wait_until(
        "the migration to wait for the lock",
        Duration::from_secs(20),
        || {
            let observer = observer.clone();
            async move {
                Ok(count(
                    &observer,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .await?
                    == 1)
            }
        },
    )
    .await?;
    ensure!(!migration.is_finished(), "the migration did not wait");
    let tables = count(
        &observer,
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
    )
    .await?;
    ensure!(tables == 0, "{tables} tables created while waiting");
    holder.commit().await?;
    let applied = migration.await??;
    ensure!(applied.len() == APPLIED_ON_A_FRESH_STORE, "{applied:?}");
    Ok(())
}

/// A store as `m0003` left it, with `users` user rows: every migration is
/// applied but the digest columns (`m0004`), whose generated column the
/// users table lacks, so that migrating rewrites the table.
async fn store_before_the_digest_columns(users: u32) -> anyhow::Result<TestDatabase> {
    let database = TestDatabase::replica_store(Backend::Postgres).await?;
    let connection = plain(&database.url).await?;
    execute(&connection, "ALTER TABLE replica_users DROP COLUMN digest").await?;
    execute(
        &connection,
        &format!("DELETE FROM recon_store_migrations WHERE version = '{DIGEST_COLUMNS}'"),
    )
    .await?;
    execute(
        &connection,
        &format!(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, \
             sequence, deleted) \
             SELECT 't1', 'u' || g, 'u' || g || '@example.test', 'User ' || g, 'active', 1, g, \
             false FROM generate_series(1, {users}) AS g"
        ),
    )
    .await?;
    Ok(database)
}

/// Sets one of the database's own defaults for new sessions, e.g.
/// `statement_timeout = '1ms'`.
async fn set_database_default(url: &str, setting: &str) -> anyhow::Result<()> {
    let connection = plain(url).await?;
    let name: String = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT current_database() AS name",
        ))
        .await?
        .context("no current database")?
        .try_get("", "name")?;
    execute(&connection, &format!("ALTER DATABASE {name} SET {setting}")).await
}

/// The table rewrite of `m0004` takes longer than a short statement
/// timeout — shown in a session bounded to 1 ms — yet `Store::migrate`
/// applies it on a database whose own default `statement_timeout` is 1 ms:
/// a migration session switches the timeout off. A bound the operator sets
/// does apply, and a migration it cuts off leaves the store as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_rewrite_outlasting_a_short_statement_timeout_is_migrated() -> anyhow::Result<()> {
    const USERS: u32 = 50_000;
    let database = store_before_the_digest_columns(USERS).await?;
    let rewrite = recon_core::digest::postgres_digest_columns(&[("replica_users", Kind::USER)])
        .pop()
        .context("no digest column statement")?;
    let bounded = plain(&database.url).await?;
    let transaction = sea_orm::TransactionTrait::begin(&bounded).await?;
    transaction
        .execute_unprepared("SET LOCAL statement_timeout = '1ms'")
        .await?;
    match transaction.execute_unprepared(&rewrite).await {
        Ok(_) => bail!("the rewrite of {USERS} rows finished within 1 ms: it shows nothing"),
        Err(error) => ensure!(
            sqlstate(&error).as_deref() == Some("57014"),
            "not a statement timeout: {error}"
        ),
    }
    transaction.rollback().await?;

    set_database_default(&database.url, "statement_timeout = '1ms'").await?;
    let cut_off = Store::migrate(
        &database.url,
        MigrationOptions {
            statement_timeout: Some(Duration::from_millis(1)),
            lock_timeout: None,
        },
    )
    .await;
    ensure!(cut_off.is_err(), "a 1 ms bound let the rewrite through");
    let behind = Store::connect(&database.url).await.err();
    ensure!(
        matches!(&behind, Some(Error::SchemaBehind { missing }) if *missing == [DIGEST_COLUMNS]),
        "a cut-off migration left the store {behind:?}"
    );

    let applied = Store::migrate(&database.url, MigrationOptions::default()).await?;
    ensure!(applied == [DIGEST_COLUMNS], "{applied:?}");
    let store = Store::connect(&database.url).await?;
    let digests = count(
        store.connection(),
        "SELECT count(digest) FROM replica_users",
    )
    .await?;
    ensure!(digests == i64::from(USERS), "{digests} rows have a digest");
    Ok(())
}

/// A migration that needs a table lock a replica's transaction holds
/// waits for it — past the database's own default `lock_timeout` of 1 ms —
/// and applies once the transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_a_replicas_transaction_past_a_short_lock_timeout()
-> anyhow::Result<()> {
    let database = store_before_the_digest_columns(10).await?;
    set_database_default(&database.url, "lock_timeout = '1ms'").await?;
    let replica = Store::connect(&database.url).await.err();
    ensure!(
        matches!(replica, Some(Error::SchemaBehind { .. })),
        "{replica:?}"
    );
    let reader_connection = plain(&database.url).await?;
    let reader = sea_orm::TransactionTrait::begin(&reader_connection).await?;
    count(&reader, "SELECT count(*) FROM replica_users").await?;
    let url = database.url.clone();
    let migration =
        tokio::spawn(async move { Store::migrate(&url, MigrationOptions::default()).await });
    let observer = plain(&database.url).await?;
    wait_until(
        "the migration to wait for the users table",
        Duration::from_secs(20),
        || {
            let observer = observer.clone();
            async move {
                Ok(count(
                    &observer,
                    "SELECT count(*) FROM pg_locks WHERE relation = 'replica_users'::regclass \
                     AND NOT granted",
                )
                .await?
                    == 1)
            }
        },
    )
    .await?;
    // Well past the 1 ms a session with the database's default would wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !migration.is_finished(),
        "the migration gave up waiting: {:?}",
        migration.await?
    );
    reader.commit().await?;
    let applied = migration.await??;
    ensure!(applied == [DIGEST_COLUMNS], "{applied:?}");
    Ok(())
}

/// `recon store migrate`, twice at once on a fresh PostgreSQL store: both
/// exit 0, one prints every migration it applied, the other waited and
/// prints "store is up to date".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_recon_store_migrate_at_once_apply_the_schema_once() -> anyhow::Result<()> {
    let database = TestDatabase::create(Backend::Postgres).await?;
    let run = || {
        tokio::process::Command::new(recon_binary().expect("recon binary"))
            .args(["store", "migrate", "--database-url", &database.url])
            .output()
    };
    let (first, second) = tokio::join!(run(), run());
    let mut printed = Vec::new();
    for output in [first?, second?] {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "recon store migrate failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        printed.push(stdout);
    }
    printed.sort_by_key(|stdout| stdout.len());
    ensure!(printed[0] == "store is up to date\n", "{printed:?}");
    let applied: Vec<&str> = printed[1]
        .lines()
        .filter_map(|line| line.strip_prefix("applied "))
        .collect();
    ensure!(
        applied.len() == APPLIED_ON_A_FRESH_STORE && applied[0] == FIRST_MIGRATION,
        "{printed:?}"
    );
    Ok(())
}
