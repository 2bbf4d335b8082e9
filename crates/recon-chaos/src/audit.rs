//! The fencing audit: triggers of the checker's own in the replica
//! database record, for every committed transaction, which epoch it wrote
//! data rows under, which epoch it presented to the fence table, and every
//! change of a fence row. With PostgreSQL's commit timestamps
//! (`track_commit_timestamp`, set by the private cluster) that says whether
//! any data write committed with an epoch older than a fence committed
//! before it (a write accepted from a fenced epoch), and whether any data
//! write did not present its epoch to the fence at all.
//!
//! A write's epoch is learnt on the data tables' side: recon's store names
//! a reconciliation batch's scope and epoch in transaction-local settings
//! (`recon.write_scope`, `recon.write_epoch`) before it checks the fence,
//! and the data triggers read them. Were the epoch learnt from the fence
//! insert only, a write that skipped the fence would go unseen.
//!
//! Rolled-back transactions leave nothing (the audit rows roll back with
//! them). Consumer writes (event form) name no epoch and are not audited.
//!
//! The same install records every **version regression**: an update of a
//! data row whose `(generation, sequence)` goes down, with the epoch it was
//! written under (none: an event) and when. The only regression allowed is
//! a reconciliation write after a restore of the monolith (the nemesis
//! notes each restore here before it makes it): the restored source holds
//! rows at versions below the lost future the replica had applied. An event
//! that lowers a version, or a reconciliation write that does with no
//! restore before it, breaks "no version regression" — whatever the run's
//! pause policy.
//!
//! Nothing here is recon's code: the triggers are plain SQL.

use anyhow::Context;
use recon_core::schema::Schema;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::{Duration, Instant};

/// Statements that create the audit tables and triggers.
const INSTALL: [&str; 11] = [
    "CREATE TABLE chaos_epochs (txid BIGINT NOT NULL, scope TEXT NOT NULL, epoch BIGINT NOT NULL)",
    "CREATE TABLE chaos_fences (txid BIGINT NOT NULL, scope TEXT NOT NULL, epoch BIGINT NOT NULL)",
    "CREATE TABLE chaos_writes (txid BIGINT NOT NULL, table_name TEXT NOT NULL, scope TEXT, epoch BIGINT)",
    "CREATE FUNCTION chaos_note_epoch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
       INSERT INTO chaos_epochs VALUES (txid_current(), NEW.scope, NEW.epoch); RETURN NEW; END $$",
    "CREATE FUNCTION chaos_note_fence() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
       INSERT INTO chaos_fences VALUES (txid_current(), NEW.scope, NEW.epoch); RETURN NULL; END $$",
    // A setting never set in the session reads NULL, one set by an earlier
    // transaction of the session reads ''.
    "CREATE FUNCTION chaos_note_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
       INSERT INTO chaos_writes VALUES (txid_current(), TG_TABLE_NAME, \
         nullif(current_setting('recon.write_scope', true), ''), \
         nullif(current_setting('recon.write_epoch', true), '')::bigint); \
       RETURN NULL; END $$",
    // Fires for the row an `INSERT … ON CONFLICT` proposes, also when the
    // conflict then changes nothing: the epoch the transaction presented.
    "CREATE TRIGGER chaos_epoch BEFORE INSERT ON fences FOR EACH ROW EXECUTE FUNCTION chaos_note_epoch()",
    "CREATE TRIGGER chaos_fence AFTER INSERT OR UPDATE ON fences FOR EACH ROW EXECUTE FUNCTION chaos_note_fence()",
    "CREATE TABLE chaos_regressions (at TIMESTAMPTZ NOT NULL, table_name TEXT NOT NULL, row_text TEXT NOT NULL, \
       old_generation NUMERIC NOT NULL, old_sequence NUMERIC NOT NULL, \
       new_generation NUMERIC NOT NULL, new_sequence NUMERIC NOT NULL, epoch BIGINT)",
    "CREATE TABLE chaos_restores (at TIMESTAMPTZ NOT NULL)",
    "CREATE FUNCTION chaos_note_regression() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
       INSERT INTO chaos_regressions VALUES (clock_timestamp(), TG_TABLE_NAME, left(NEW::text, 200), \
         OLD.generation, OLD.sequence, NEW.generation, NEW.sequence, \
         nullif(current_setting('recon.write_epoch', true), '')::bigint); \
       RETURN NULL; END $$",
];

/// Installs the audit on the data tables of `schema` (every kind's table)
/// once recon created them (waits up to 60 s).
pub async fn install(replica_db: &str, schema: &Schema) -> anyhow::Result<()> {
    let connection = Database::connect(replica_db).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let tables: Vec<&str> = schema
        .kinds()
        .iter()
        .map(|kind| kind.table.as_str())
        .collect();
    let created = std::iter::once("fences")
        .chain(tables.iter().copied())
        .map(|table| format!("to_regclass('{table}') IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ");
    loop {
        let exists = connection
            .query_one_raw(Statement::from_string(
                connection.get_database_backend(),
                format!("SELECT {created} AS ready"),
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "ready"))
            .transpose()?
            .unwrap_or(false);
        if exists {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "recon did not create its schema within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for statement in INSTALL {
        connection
            .execute_unprepared(statement)
            .await
            .with_context(|| format!("install audit: {statement}"))?;
    }
    for table in tables {
        connection
            .execute_unprepared(&format!(
                "CREATE TRIGGER chaos_write AFTER INSERT OR UPDATE OR DELETE ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION chaos_note_write()"
            ))
            .await
            .with_context(|| format!("install audit on {table}"))?;
        connection
            .execute_unprepared(&format!(
                "CREATE TRIGGER chaos_regression AFTER UPDATE ON {table} FOR EACH ROW \
                 WHEN ((NEW.generation, NEW.sequence) < (OLD.generation, OLD.sequence)) \
                 EXECUTE FUNCTION chaos_note_regression()"
            ))
            .await
            .with_context(|| format!("install the version audit on {table}"))?;
    }
    connection.close().await.ok();
    Ok(())
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Committed transactions that wrote data under an epoch.
    pub fenced_writes_checked: u64,
    /// Those that did not present their epoch to the fence of their scope,
    /// and those that committed after a newer fence of their scope (or
    /// the global one) had committed: one line each.
    pub violations: Vec<String>,
}

/// Reads the audit: every data-writing transaction with an epoch that did
/// not present that epoch to its scope's fence, or whose commit came after
/// the commit of a fence change, of its scope or the global one, to a
/// newer epoch.
pub async fn check(replica_db: &str) -> anyhow::Result<Findings> {
    let connection = Database::connect(replica_db).await?;
    let backend = connection.get_database_backend();
    let written = format!(
        "WITH written AS ( \
           SELECT w.txid, w.scope, max(w.epoch) AS epoch, {at} AS committed_at \
           FROM chaos_writes w WHERE w.epoch IS NOT NULL GROUP BY w.txid, w.scope), \
         fenced AS (SELECT f.txid, f.scope, f.epoch, {fence_at} AS committed_at FROM chaos_fences f), \
         unfenced AS (SELECT w.txid || ' wrote ' || w.scope || ' at epoch ' || w.epoch || \
             ' committed ' || w.committed_at || ' without presenting it to the fence' AS line \
           FROM written w WHERE NOT EXISTS (SELECT 1 FROM chaos_epochs e \
             WHERE e.txid = w.txid AND e.scope = w.scope AND e.epoch = w.epoch)), \
         late AS (SELECT w.txid || ' wrote ' || w.scope || ' at epoch ' || w.epoch || \
             ' committed ' || w.committed_at || ' after fence ' || f.scope || '=' || f.epoch || \
             ' committed ' || f.committed_at AS line \
           FROM written w CROSS JOIN LATERAL (SELECT * FROM fenced f WHERE f.scope IN (w.scope, '*') \
             AND f.epoch > w.epoch AND f.committed_at < w.committed_at AND f.txid <> w.txid \
             ORDER BY f.committed_at LIMIT 1) f) \
         SELECT (SELECT count(*) FROM written) AS checked, \
           coalesce((SELECT string_agg(line, E'\\n') FROM \
             (SELECT line FROM unfenced UNION ALL SELECT line FROM late) lines), '') AS violations",
        at = commit_time("w.txid"),
        fence_at = commit_time("f.txid"),
    );
    let row = connection
        .query_one_raw(Statement::from_string(backend, written))
        .await
        .context("read the fencing audit")?
        .context("the audit query returned no row")?;
    connection.close().await.ok();
    let checked: i64 = row.try_get("", "checked")?;
    let violations: String = row.try_get("", "violations")?;
    Ok(Findings {
        fenced_writes_checked: u64::try_from(checked).unwrap_or(0),
        violations: violations
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Notes that the monolith is about to be restored from a backup (a
/// reconciliation write may lower a version from now on).
pub async fn note_restore(replica_db: &str) -> anyhow::Result<()> {
    execute(
        replica_db,
        "INSERT INTO chaos_restores VALUES (clock_timestamp())",
    )
    .await
    .context("note a restore")
}

/// The SQL expression of the commit time of the transaction whose 64-bit
/// id (`txid_current()`) the expression `txid` gives (needs
/// `track_commit_timestamp`).
pub fn commit_time(txid: &str) -> String {
    format!("pg_xact_commit_timestamp(({txid} % 4294967296)::text::xid)")
}

/// Runs `script` (one or more statements) on the database at `url`.
pub async fn execute(url: &str, script: &str) -> anyhow::Result<()> {
    let connection = Database::connect(url).await?;
    connection.execute_unprepared(script).await?;
    connection.close().await.ok();
    Ok(())
}

/// What the version audit found.
#[derive(Debug, Default)]
pub struct VersionFindings {
    /// Versions lowered by a reconciliation write after a restore (allowed).
    pub lowered_after_restores: u64,
    /// Versions lowered otherwise: one line each.
    pub violations: Vec<String>,
}

/// Reads the version audit: every lowered version must have been written
/// by a reconciliation (under an epoch) after a restore was noted.
pub async fn check_versions(replica_db: &str) -> anyhow::Result<VersionFindings> {
    let connection = Database::connect(replica_db).await?;
    let backend = connection.get_database_backend();
    let query = "WITH judged AS ( \
           SELECT r.*, r.epoch IS NOT NULL \
             AND EXISTS (SELECT 1 FROM chaos_restores s WHERE s.at < r.at) AS allowed \
           FROM chaos_regressions r) \
         SELECT (SELECT count(*) FROM judged WHERE allowed) AS allowed, \
           coalesce((SELECT string_agg(table_name || ' row ' || row_text || ': (' || old_generation || ', ' \
             || old_sequence || ') -> (' || new_generation || ', ' || new_sequence || ') by ' \
             || coalesce('a reconciliation at epoch ' || epoch, 'an event') || ' at ' || at \
             || CASE WHEN epoch IS NULL THEN '' ELSE ' with no restore before it' END, E'\\n' ORDER BY at) \
             FROM judged WHERE NOT allowed), '') AS violations";
    let row = connection
        .query_one_raw(Statement::from_string(backend, query.to_owned()))
        .await
        .context("read the version audit")?
        .context("the version audit returned no row")?;
    connection.close().await.ok();
    let allowed: i64 = row.try_get("", "allowed")?;
    let violations: String = row.try_get("", "violations")?;
    Ok(VersionFindings {
        lowered_after_restores: u64::try_from(allowed).unwrap_or(0),
        violations: violations
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_tests::private_postgres::PrivatePostgres;

    /// The columns of recon's tables the audit touches (and a key).
    const TABLES: [&str; 5] = [
        "CREATE TABLE fences (scope TEXT PRIMARY KEY, epoch BIGINT NOT NULL)",
        "CREATE TABLE replica_tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
           generation BIGINT NOT NULL DEFAULT 1, sequence BIGINT NOT NULL DEFAULT 1)",
        "CREATE TABLE replica_users (id TEXT PRIMARY KEY, generation BIGINT NOT NULL, sequence BIGINT NOT NULL)",
        "CREATE TABLE replica_groups (id TEXT PRIMARY KEY, generation BIGINT NOT NULL, sequence BIGINT NOT NULL)",
        "CREATE TABLE replica_memberships (id TEXT PRIMARY KEY, generation BIGINT NOT NULL, sequence BIGINT NOT NULL)",
    ];

    /// A reconciliation write as recon's store makes it: the epoch named
    /// in the transaction's settings, the fence raise of its scope and the
    /// data, in one transaction.
    fn write_at(epoch: u64, name: &str) -> String {
        format!(
            "BEGIN; \
             SELECT set_config('recon.write_scope', 't1', true), set_config('recon.write_epoch', '{epoch}', true); \
             INSERT INTO fences VALUES ('t1', {epoch}) ON CONFLICT (scope) DO UPDATE \
               SET epoch = excluded.epoch WHERE fences.epoch < excluded.epoch; \
             INSERT INTO replica_tenants VALUES ('t1', '{name}') ON CONFLICT (id) DO UPDATE SET name = excluded.name; \
             COMMIT"
        )
    }

    /// The same write from a store whose apply path skipped the fence.
    fn write_skipping_the_fence_at(epoch: u64, name: &str) -> String {
        format!(
            "BEGIN; \
             SELECT set_config('recon.write_scope', 't1', true), set_config('recon.write_epoch', '{epoch}', true); \
             INSERT INTO replica_tenants VALUES ('t1', '{name}') ON CONFLICT (id) DO UPDATE SET name = excluded.name; \
             COMMIT"
        )
    }

    #[tokio::test]
    async fn a_data_write_committed_after_a_newer_fence_is_found() -> anyhow::Result<()> {
        let postgres = PrivatePostgres::start().await?;
        let url = postgres.create_database("audit").await?;
        let connection = Database::connect(&url).await?;
        for statement in TABLES {
            connection.execute_unprepared(statement).await?;
        }
        install(&url, Schema::default_schema()).await?;
        connection
            .execute_unprepared(&write_at(2, "at epoch 2"))
            .await?;
        // A new leader takes over: the global fence moves to 3.
        connection
            .execute_unprepared("INSERT INTO fences VALUES ('*', 3)")
            .await?;
        connection
            .execute_unprepared(&write_at(3, "at epoch 3"))
            .await?;
        let clean = check(&url).await?;
        assert_eq!(clean.fenced_writes_checked, 2);
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        // A zombie of epoch 2 whose write a broken fence let through.
        connection
            .execute_unprepared(&write_at(2, "zombie"))
            .await?;
        // A consumer write carries no epoch: not audited.
        connection
            .execute_unprepared("UPDATE replica_tenants SET name = 'event'")
            .await?;
        let found = check(&url).await?;
        assert_eq!(found.fenced_writes_checked, 3);
        assert_eq!(found.violations.len(), 1, "{:?}", found.violations);
        assert!(
            found.violations[0].contains("at epoch 2"),
            "{:?}",
            found.violations
        );
        assert!(
            found.violations[0].contains("after fence *=3"),
            "{:?}",
            found.violations
        );
        connection.close().await.ok();
        Ok(())
    }

    #[tokio::test]
    async fn a_data_write_that_skipped_the_fence_is_found() -> anyhow::Result<()> {
        let postgres = PrivatePostgres::start().await?;
        let url = postgres.create_database("audit").await?;
        let connection = Database::connect(&url).await?;
        for statement in TABLES {
            connection.execute_unprepared(statement).await?;
        }
        install(&url, Schema::default_schema()).await?;
        connection
            .execute_unprepared(&write_at(2, "at epoch 2"))
            .await?;
        connection
            .execute_unprepared("INSERT INTO fences VALUES ('*', 3)")
            .await?;
        // A zombie of epoch 2 whose store never looked at the fence.
        connection
            .execute_unprepared(&write_skipping_the_fence_at(2, "zombie"))
            .await?;
        let found = check(&url).await?;
        assert_eq!(found.fenced_writes_checked, 2);
        assert_eq!(found.violations.len(), 2, "{:?}", found.violations);
        assert!(
            found
                .violations
                .iter()
                .any(|line| line.contains("wrote t1 at epoch 2")
                    && line.ends_with("without presenting it to the fence")),
            "{:?}",
            found.violations
        );
        assert!(
            found
                .violations
                .iter()
                .any(|line| line.contains("after fence *=3")),
            "{:?}",
            found.violations
        );
        connection.close().await.ok();
        Ok(())
    }

    /// A write of user `u` at `(generation, sequence)`: an event (no epoch)
    /// or a reconciliation at `epoch`.
    fn user_write(epoch: Option<u64>, generation: u64, sequence: u64) -> String {
        let setting = epoch.map_or(String::new(), |epoch| {
            format!("SELECT set_config('recon.write_epoch', '{epoch}', true); ")
        });
        format!(
            "BEGIN; {setting}\
             INSERT INTO replica_users VALUES ('u', {generation}, {sequence}) ON CONFLICT (id) DO UPDATE \
               SET generation = excluded.generation, sequence = excluded.sequence; COMMIT"
        )
    }

    #[tokio::test]
    async fn a_lowered_version_is_found_unless_a_reconciliation_wrote_it_after_a_restore()
    -> anyhow::Result<()> {
        let postgres = PrivatePostgres::start().await?;
        let url = postgres.create_database("versions").await?;
        let connection = Database::connect(&url).await?;
        for statement in TABLES {
            connection.execute_unprepared(statement).await?;
        }
        install(&url, Schema::default_schema()).await?;
        // Versions that only go up, by events and reconciliation alike.
        for statement in [
            user_write(None, 1, 5),
            user_write(Some(2), 1, 9),
            user_write(None, 1, 12),
        ] {
            connection.execute_unprepared(&statement).await?;
        }
        let clean = check_versions(&url).await?;
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        // An event that lowers a version (a broken newer-only guard).
        connection
            .execute_unprepared(&user_write(None, 1, 7))
            .await?;
        // A reconciliation that lowers one with no restore (a broken
        // watermark guard).
        connection
            .execute_unprepared(&user_write(None, 1, 12))
            .await?;
        connection
            .execute_unprepared(&user_write(Some(3), 1, 8))
            .await?;
        let found = check_versions(&url).await?;
        assert_eq!(found.violations.len(), 2, "{:?}", found.violations);
        assert!(
            found.violations[0].contains("by an event"),
            "{:?}",
            found.violations
        );
        assert!(
            found.violations[1].contains("reconciliation at epoch 3 ")
                && found.violations[1].ends_with("with no restore before it"),
            "{:?}",
            found.violations
        );
        // After a restore, a reconciliation may lower it; an event still
        // may not.
        note_restore(&url).await?;
        connection
            .execute_unprepared(&user_write(None, 1, 500))
            .await?;
        connection
            .execute_unprepared(&user_write(Some(4), 1, 50))
            .await?;
        let after = check_versions(&url).await?;
        assert_eq!(after.lowered_after_restores, 1);
        assert_eq!(after.violations.len(), 2, "{:?}", after.violations);
        connection
            .execute_unprepared(&user_write(None, 1, 40))
            .await?;
        assert_eq!(check_versions(&url).await?.violations.len(), 3);
        connection.close().await.ok();
        Ok(())
    }
}
