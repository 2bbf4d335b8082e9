//! The deletion audit, the second half of "no version regression": a row
//! is never deleted by reconciliation while the source holds it at a
//! version at or below the watermark of the page the deletion came from.
//!
//! Two sets of triggers of the checker's own, plain SQL:
//!
//! * on the monolith's tables, every write of a row (and, once, every row
//!   as it stands when the audit is installed): its key, its version and
//!   whether it lives, in `chaos_source_history`; and every change of the
//!   monolith's generation (a restore) in `chaos_source_generations`;
//! * on the replica's tables, every tombstone a reconciliation writes over
//!   a live row (or for a key it did not hold): its key, its version —
//!   recon tombstones a phantom at the watermark of the page that covered
//!   it — and the epoch it was written under, in `chaos_tombstones`.
//!
//! Both databases live in one PostgreSQL cluster with commit timestamps,
//! so every record has the commit time of its transaction. A tombstone at
//! watermark `W` committed at `T` breaks the invariant when the source's
//! last write of that key committed before `T` left the row live at a
//! version `<= W`: versions order the source's commits, so a write at or
//! below `W` was in the snapshot the page was read in, and the page should
//! have held the row. A write above `W` (the key created or re-created
//! after the page was read) or a deletion leaves nothing to judge.
//!
//! One exception, counted apart: a restore puts rows back at old versions
//! in a new generation. A page read before the restore (its watermark's
//! generation older than the restore's) saw the lost future in which the
//! row was deleted; the tombstone it leads to is stale, not wrong, and the
//! run that the restore calls for writes the restored row back (its
//! watermark is of the new generation, above the tombstone).

use crate::audit::{commit_time, execute};
use anyhow::Context;
use recon_monolith::model::Model;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use std::collections::{HashMap, HashSet};

/// One kind's tables as the audit watches them.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The kind's name (the records' `kind`).
    pub kind: String,
    /// The monolith's table.
    pub source_table: String,
    /// The replica's table.
    pub replica_table: String,
    /// The key columns, scope first; the same names on both sides.
    pub key_columns: Vec<String>,
}

/// The tables of every kind of `model`.
pub fn watched(model: &Model) -> Vec<Watched> {
    model
        .kinds()
        .iter()
        .map(|kind| Watched {
            kind: kind.name().to_owned(),
            source_table: kind.table.clone(),
            replica_table: kind.def.table.clone(),
            key_columns: kind.primary_key().into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

/// The key of `row` (`NEW` or `OLD`) as text: its columns joined by `:`.
fn key_of(row: &str, columns: &[String]) -> String {
    let columns: Vec<String> = columns
        .iter()
        .map(|column| format!("{row}.\"{column}\""))
        .collect();
    format!("concat_ws(':', {})", columns.join(", "))
}

/// The commit time of transaction `txid` in microseconds since the epoch.
fn committed_at(txid: &str) -> String {
    format!(
        "(extract(epoch FROM {}) * 1000000)::bigint",
        commit_time(txid)
    )
}

/// Installs the source side on the monolith's database, in one
/// transaction with the record of every row as it stands.
pub async fn install_source(monolith_db: &str, kinds: &[Watched]) -> anyhow::Result<()> {
    let mut script = String::from(
        "BEGIN; \
         CREATE TABLE chaos_source_history (id BIGSERIAL PRIMARY KEY, \
           txid BIGINT NOT NULL DEFAULT txid_current(), kind TEXT NOT NULL, key TEXT NOT NULL, \
           generation BIGINT NOT NULL, sequence BIGINT NOT NULL, live BOOLEAN NOT NULL); \
         CREATE TABLE chaos_source_generations (txid BIGINT NOT NULL DEFAULT txid_current(), \
           generation BIGINT NOT NULL); \
         CREATE FUNCTION chaos_note_generation() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO chaos_source_generations (generation) VALUES (NEW.generation); RETURN NULL; END $$; \
         CREATE TRIGGER chaos_generation AFTER UPDATE ON meta FOR EACH ROW \
           WHEN (NEW.generation <> OLD.generation) EXECUTE FUNCTION chaos_note_generation(); ",
    );
    for watched in kinds {
        let table = &watched.source_table;
        let kind = &watched.kind;
        let record = |row: &str, live: bool| {
            format!(
                "INSERT INTO chaos_source_history (kind, key, generation, sequence, live) \
                 VALUES ('{kind}', {key}, {row}.generation, {row}.sequence, {live})",
                key = key_of(row, &watched.key_columns)
            )
        };
        script.push_str(&format!(
            "CREATE FUNCTION chaos_history_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF TG_OP = 'DELETE' THEN {deleted}; ELSE {written}; END IF; RETURN NULL; END $$; \
             CREATE TRIGGER chaos_history AFTER INSERT OR UPDATE OR DELETE ON \"{table}\" \
               FOR EACH ROW EXECUTE FUNCTION chaos_history_{table}(); \
             INSERT INTO chaos_source_history (kind, key, generation, sequence, live) \
               SELECT '{kind}', {key}, generation, sequence, true FROM \"{table}\" AS row; ",
            deleted = record("OLD", false),
            written = record("NEW", true),
            key = key_of("row", &watched.key_columns),
        ));
    }
    script.push_str("COMMIT");
    execute(monolith_db, &script)
        .await
        .context("install the deletion audit on the monolith")
}

/// Installs the replica side (recon's tables must exist).
pub async fn install_replica(replica_db: &str, kinds: &[Watched]) -> anyhow::Result<()> {
    let mut script = String::from(
        "CREATE TABLE chaos_tombstones (txid BIGINT NOT NULL DEFAULT txid_current(), \
           kind TEXT NOT NULL, key TEXT NOT NULL, generation BIGINT NOT NULL, \
           sequence BIGINT NOT NULL, epoch BIGINT NOT NULL); ",
    );
    for watched in kinds {
        let table = &watched.replica_table;
        // A setting never set in the session reads NULL, one set by an
        // earlier transaction of the session reads '' (events name none).
        script.push_str(&format!(
            "CREATE FUNCTION chaos_tombstone_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.deleted AND (TG_OP = 'INSERT' OR NOT OLD.deleted) \
                 AND nullif(current_setting('recon.write_epoch', true), '') IS NOT NULL THEN \
                 INSERT INTO chaos_tombstones (kind, key, generation, sequence, epoch) \
                   VALUES ('{kind}', {key}, NEW.generation, NEW.sequence, \
                     current_setting('recon.write_epoch')::bigint); \
               END IF; RETURN NULL; END $$; \
             CREATE TRIGGER chaos_tombstone AFTER INSERT OR UPDATE ON {table} \
               FOR EACH ROW EXECUTE FUNCTION chaos_tombstone_{table}(); ",
            kind = watched.kind,
            key = key_of("NEW", &watched.key_columns),
        ));
    }
    execute(replica_db, &script)
        .await
        .context("install the deletion audit on the replica")
}

/// A version as both sides store it.
type Version = (i64, i64);

/// A tombstone a reconciliation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Kind and key.
    pub kind: String,
    /// The key as text.
    pub key: String,
    /// Its version: the watermark of the page it came from.
    pub watermark: Version,
    /// The epoch it was written under.
    pub epoch: i64,
    /// Its commit time (µs since the epoch).
    pub committed_at: i64,
}

/// One write of a source row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWrite {
    /// Kind and key.
    pub kind: String,
    /// The key as text.
    pub key: String,
    /// The row's version after the write (before it, for a deletion).
    pub version: Version,
    /// Whether the row lives after the write.
    pub live: bool,
    /// The writing transaction.
    pub txid: i64,
    /// Its commit time (µs since the epoch).
    pub committed_at: i64,
    /// Order inside the transaction.
    pub id: i64,
}

/// What the deletion audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeletionFindings {
    /// Tombstones written by reconciliation, judged.
    pub tombstones_checked: u64,
    /// Of those, stale ones from pages read before a restore (allowed).
    pub before_restores: u64,
    /// Tombstones of rows the source held at or below their watermark:
    /// one line each.
    pub violations: Vec<String>,
}

/// Judges every tombstone against the source's history; `restores` maps
/// a restore's transaction to the generation it started.
pub fn judge(
    tombstones: &[Tombstone],
    mut history: Vec<SourceWrite>,
    restores: &HashMap<i64, i64>,
) -> DeletionFindings {
    history.sort_by_key(|write| (write.committed_at, write.id));
    let mut by_key: HashMap<(&str, &str), Vec<&SourceWrite>> = HashMap::new();
    for write in &history {
        by_key
            .entry((write.kind.as_str(), write.key.as_str()))
            .or_default()
            .push(write);
    }
    let mut findings = DeletionFindings {
        tombstones_checked: tombstones.len() as u64,
        ..DeletionFindings::default()
    };
    for tombstone in tombstones {
        let writes = by_key
            .get(&(tombstone.kind.as_str(), tombstone.key.as_str()))
            .map_or(&[][..], Vec::as_slice);
        let before = writes.partition_point(|write| write.committed_at < tombstone.committed_at);
        let Some(held) = before.checked_sub(1).map(|last| writes[last]) else {
            continue;
        };
        if !held.live || held.version > tombstone.watermark {
            continue;
        }
        if restores
            .get(&held.txid)
            .is_some_and(|generation| *generation > tombstone.watermark.0)
        {
            findings.before_restores += 1;
            continue;
        }
        findings.violations.push(format!(
            "{} {} tombstoned by a reconciliation at epoch {} at watermark ({}, {}) committed at {} µs \
             while the source held it live at ({}, {}) since {} µs",
            tombstone.kind,
            tombstone.key,
            tombstone.epoch,
            tombstone.watermark.0,
            tombstone.watermark.1,
            tombstone.committed_at,
            held.version.0,
            held.version.1,
            held.committed_at,
        ));
    }
    findings
}

/// Reads both sides' records and judges them.
pub async fn check(monolith_db: &str, replica_db: &str) -> anyhow::Result<DeletionFindings> {
    let replica = Database::connect(replica_db).await?;
    let tombstones = rows(
        &replica,
        format!(
            "SELECT kind, key, generation, sequence, epoch, {at} AS at FROM chaos_tombstones",
            at = committed_at("txid")
        ),
    )
    .await
    .context("read the replica's tombstones")?
    .iter()
    .map(|row| {
        Ok(Tombstone {
            kind: row.try_get("", "kind")?,
            key: row.try_get("", "key")?,
            watermark: (row.try_get("", "generation")?, row.try_get("", "sequence")?),
            epoch: row.try_get("", "epoch")?,
            committed_at: row.try_get("", "at")?,
        })
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    replica.close().await.ok();
    let source = Database::connect(monolith_db).await?;
    let wanted: HashSet<(&str, &str)> = tombstones
        .iter()
        .map(|tombstone| (tombstone.kind.as_str(), tombstone.key.as_str()))
        .collect();
    let history = rows(
        &source,
        format!(
            "SELECT id, txid, kind, key, generation, sequence, live, {at} AS at FROM chaos_source_history",
            at = committed_at("txid")
        ),
    )
    .await
    .context("read the monolith's history")?
    .iter()
    .map(|row| {
        Ok(SourceWrite {
            kind: row.try_get("", "kind")?,
            key: row.try_get("", "key")?,
            version: (row.try_get("", "generation")?, row.try_get("", "sequence")?),
            live: row.try_get("", "live")?,
            txid: row.try_get("", "txid")?,
            committed_at: row.try_get("", "at")?,
            id: row.try_get("", "id")?,
        })
    })
    .filter(|write: &anyhow::Result<SourceWrite>| {
        write.as_ref().map_or(true, |write| {
            wanted.contains(&(write.kind.as_str(), write.key.as_str()))
        })
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    let restores = rows(
        &source,
        "SELECT txid, generation FROM chaos_source_generations".to_owned(),
    )
    .await
    .context("read the monolith's generation changes")?
    .iter()
    .map(|row| Ok((row.try_get("", "txid")?, row.try_get("", "generation")?)))
    .collect::<anyhow::Result<HashMap<i64, i64>>>()?;
    source.close().await.ok();
    Ok(judge(&tombstones, history, &restores))
}

async fn rows(
    connection: &DatabaseConnection,
    query: String,
) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
    Ok(connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            query,
        ))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recon_tests::private_postgres::PrivatePostgres;

    fn tombstone(key: &str, watermark: Version, committed_at: i64) -> Tombstone {
        Tombstone {
            kind: "user".into(),
            key: key.into(),
            watermark,
            epoch: 2,
            committed_at,
        }
    }

    fn write(key: &str, version: Version, live: bool, txid: i64, committed_at: i64) -> SourceWrite {
        SourceWrite {
            kind: "user".into(),
            key: key.into(),
            version,
            live,
            txid,
            committed_at,
            id: committed_at,
        }
    }

    #[test]
    fn a_tombstone_of_a_row_the_source_held_at_or_below_the_watermark_is_found() {
        let history = vec![
            write("t1:held", (1, 5), true, 10, 100),
            write("t1:at", (1, 9), true, 11, 110),
        ];
        let found = judge(
            &[
                tombstone("t1:held", (1, 9), 500),
                tombstone("t1:at", (1, 9), 500),
            ],
            history,
            &HashMap::new(),
        );
        assert_eq!(found.tombstones_checked, 2);
        assert_eq!(found.violations.len(), 2, "{:?}", found.violations);
        assert!(
            found.violations[0].starts_with(
                "user t1:held tombstoned by a reconciliation at epoch 2 at watermark (1, 9)"
            ),
            "{:?}",
            found.violations
        );
        assert!(
            found.violations[0].contains("held it live at (1, 5)"),
            "{:?}",
            found.violations
        );
    }

    #[test]
    fn a_tombstone_of_a_row_deleted_or_created_above_the_watermark_is_allowed() {
        let history = vec![
            // Deleted in the source: a phantom.
            write("t1:gone", (1, 3), true, 10, 100),
            write("t1:gone", (1, 3), false, 12, 120),
            // Deleted, then created again after the page was read.
            write("t1:again", (1, 4), true, 10, 100),
            write("t1:again", (1, 4), false, 12, 120),
            write("t1:again", (1, 12), true, 14, 140),
            // Never in the source.
        ];
        let found = judge(
            &[
                tombstone("t1:gone", (1, 9), 500),
                tombstone("t1:again", (1, 9), 500),
                tombstone("t1:never", (1, 9), 500),
            ],
            history,
            &HashMap::new(),
        );
        assert_eq!(found.tombstones_checked, 3);
        assert!(found.violations.is_empty(), "{:?}", found.violations);
    }

    #[test]
    fn only_the_source_writes_committed_before_the_tombstone_count() {
        // Created at (1, 5) after the tombstone committed: an event the
        // stream brings later, not a row the page missed.
        let history = vec![write("t1:late", (1, 5), true, 10, 900)];
        let found = judge(
            &[tombstone("t1:late", (1, 9), 500)],
            history,
            &HashMap::new(),
        );
        assert!(found.violations.is_empty(), "{:?}", found.violations);
    }

    #[test]
    fn a_stale_tombstone_from_a_page_read_before_a_restore_is_counted_apart() {
        // The restore (transaction 20, generation 2) put the row back at
        // its old version; a page of generation 1 saw it deleted.
        let history = vec![
            write("t1:back", (1, 4), true, 10, 100),
            write("t1:back", (1, 4), false, 12, 120),
            write("t1:back", (1, 4), true, 20, 200),
        ];
        let restores = HashMap::from([(20, 2)]);
        let stale = judge(
            &[tombstone("t1:back", (1, 9), 500)],
            history.clone(),
            &restores,
        );
        assert_eq!(stale.before_restores, 1);
        assert!(stale.violations.is_empty(), "{:?}", stale.violations);
        // A page read after the restore held the row: that is a violation.
        let after = judge(&[tombstone("t1:back", (2, 3), 500)], history, &restores);
        assert_eq!(after.before_restores, 0);
        assert_eq!(after.violations.len(), 1, "{:?}", after.violations);
    }

    /// The triggers on real PostgreSQL: a monolith-shaped and a
    /// replica-shaped table, a reconciliation tombstone over a row the
    /// source holds (found) and over one it deleted (allowed), and event
    /// tombstones (not judged).
    #[tokio::test]
    async fn the_triggers_record_what_the_judge_needs() -> anyhow::Result<()> {
        let postgres = PrivatePostgres::start().await?;
        let monolith = postgres.create_database("monolith").await?;
        let replica = postgres.create_database("replica").await?;
        execute(
            &monolith,
            "CREATE TABLE meta (id INT PRIMARY KEY, generation BIGINT NOT NULL, sequence BIGINT NOT NULL); \
             INSERT INTO meta VALUES (1, 1, 0); \
             CREATE TABLE users (tenant_id TEXT, id TEXT, generation BIGINT NOT NULL, sequence BIGINT NOT NULL, \
               PRIMARY KEY (tenant_id, id)); \
             INSERT INTO users VALUES ('t1', 'kept', 1, 1), ('t1', 'gone', 1, 2)",
        )
        .await?;
        execute(
            &replica,
            "CREATE TABLE replica_users (tenant_id TEXT, id TEXT, generation BIGINT NOT NULL, \
               sequence BIGINT NOT NULL, deleted BOOLEAN NOT NULL DEFAULT false, PRIMARY KEY (tenant_id, id)); \
             INSERT INTO replica_users VALUES ('t1', 'kept', 1, 1), ('t1', 'gone', 1, 2), ('t1', 'event', 1, 1)",
        )
        .await?;
        let kinds = vec![Watched {
            kind: "user".into(),
            source_table: "users".into(),
            replica_table: "replica_users".into(),
            key_columns: vec!["tenant_id".into(), "id".into()],
        }];
        install_source(&monolith, &kinds).await?;
        install_replica(&replica, &kinds).await?;
        execute(
            &monolith,
            "UPDATE meta SET sequence = 3; DELETE FROM users WHERE id = 'gone'",
        )
        .await?;
        let reconcile = |id: &str, generation: i64| {
            format!(
                "BEGIN; SELECT set_config('recon.write_epoch', '4', true); \
                 UPDATE replica_users SET deleted = true, generation = {generation}, sequence = 3 \
                 WHERE id = '{id}'; COMMIT"
            )
        };
        let event_recreates = |id: &str| {
            format!("UPDATE replica_users SET deleted = false, sequence = 2 WHERE id = '{id}'")
        };
        execute(&replica, &reconcile("gone", 1)).await?;
        execute(
            &replica,
            "UPDATE replica_users SET deleted = true, sequence = 5 WHERE id = 'event'",
        )
        .await?;
        let clean = check(&monolith, &replica).await?;
        assert_eq!(clean.tombstones_checked, 1);
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        // A broken phantom walk tombstones a row the page held.
        execute(&replica, &reconcile("kept", 1)).await?;
        let found = check(&monolith, &replica).await?;
        assert_eq!(found.tombstones_checked, 2);
        assert_eq!(found.violations.len(), 1, "{:?}", found.violations);
        assert!(
            found.violations[0].starts_with(
                "user t1:kept tombstoned by a reconciliation at epoch 4 at watermark (1, 3)"
            ),
            "{:?}",
            found.violations
        );
        // A restore: the generation changes, rows come back at old versions.
        execute(
            &monolith,
            "BEGIN; DELETE FROM users; INSERT INTO users VALUES ('t1', 'gone', 1, 2); \
             UPDATE meta SET generation = 2; COMMIT",
        )
        .await?;
        // A page read before it saw the row deleted (stale, counted
        // apart); one read after it, in generation 2, holds the row.
        execute(&replica, &event_recreates("gone")).await?;
        execute(&replica, &reconcile("gone", 1)).await?;
        let stale = check(&monolith, &replica).await?;
        assert_eq!(stale.before_restores, 1);
        assert_eq!(stale.violations.len(), 1, "{:?}", stale.violations);
        execute(&replica, &event_recreates("gone")).await?;
        execute(&replica, &reconcile("gone", 2)).await?;
        let after = check(&monolith, &replica).await?;
        assert_eq!(after.violations.len(), 2, "{:?}", after.violations);
        assert!(
            after
                .violations
                .iter()
                .any(|line| line.starts_with("user t1:gone")),
            "{:?}",
            after.violations
        );
        Ok(())
    }
}
