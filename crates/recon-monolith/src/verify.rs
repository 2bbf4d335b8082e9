//! An independent check that a replica holds exactly the monolith's rows.
//!
//! Reads both databases with plain SQL — the monolith's own tables and the
//! replica store's live rows (`replica_*` tables, tombstones excluded) — and
//! compares every field and version. It shares no code with recon's diff or
//! store, so a bug there cannot hide here. The demo ends with it and the
//! integration tests use it.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};
use std::collections::BTreeSet;

/// (kind, monolith query, replica query); every query yields one text
/// column `line` per row, built the same way on both sides.
const QUERIES: [(&str, &str, &str); 4] = [
    (
        "tenant",
        "SELECT id || '|' || name || '|' || generation || '.' || sequence AS line FROM tenants",
        "SELECT id || '|' || name || '|' || generation || '.' || sequence AS line FROM replica_tenants WHERE NOT deleted",
    ),
    (
        "user",
        "SELECT tenant_id || '|' || id || '|' || email || '|' || display_name || '|' || status || '|' || generation || '.' || sequence AS line FROM users",
        "SELECT tenant_id || '|' || id || '|' || email || '|' || display_name || '|' || status || '|' || generation || '.' || sequence AS line FROM replica_users WHERE NOT deleted",
    ),
    (
        "group",
        "SELECT tenant_id || '|' || id || '|' || name || '|' || generation || '.' || sequence AS line FROM \"groups\"",
        "SELECT tenant_id || '|' || id || '|' || name || '|' || generation || '.' || sequence AS line FROM replica_groups WHERE NOT deleted",
    ),
    (
        "membership",
        "SELECT tenant_id || '|' || group_id || '|' || user_id || '|' || generation || '.' || sequence AS line FROM memberships",
        "SELECT tenant_id || '|' || group_id || '|' || user_id || '|' || generation || '.' || sequence AS line FROM replica_memberships WHERE NOT deleted",
    ),
];

/// What differs between the two databases; empty when they are equal.
#[derive(Debug, Default)]
pub struct Differences {
    /// Rows compared on the monolith's side.
    pub monolith_rows: usize,
    /// Live rows compared on the replica's side.
    pub replica_rows: usize,
    /// `kind|fields…` lines only the monolith has (missing or outdated in
    /// the replica), at most 20.
    pub only_in_monolith: Vec<String>,
    /// Lines only the replica has (phantoms or wrong data), at most 20.
    pub only_in_replica: Vec<String>,
    /// How many lines differ in all.
    pub total: usize,
}

impl Differences {
    /// True when both sides hold exactly the same rows.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Compares the monolith database at `monolith_url` with the replica store
/// at `replica_url`, row by row, versions included.
pub async fn compare_databases(
    monolith_url: &str,
    replica_url: &str,
) -> Result<Differences, DbErr> {
    let monolith = Database::connect(monolith_url).await?;
    let replica = Database::connect(replica_url).await?;
    let mut differences = Differences::default();
    for (kind, monolith_query, replica_query) in QUERIES {
        let truth = lines(&monolith, kind, monolith_query).await?;
        let copy = lines(&replica, kind, replica_query).await?;
        differences.monolith_rows += truth.len();
        differences.replica_rows += copy.len();
        for line in truth.difference(&copy) {
            differences.total += 1;
            if differences.only_in_monolith.len() < 20 {
                differences.only_in_monolith.push(line.clone());
            }
        }
        for line in copy.difference(&truth) {
            differences.total += 1;
            if differences.only_in_replica.len() < 20 {
                differences.only_in_replica.push(line.clone());
            }
        }
    }
    monolith.close().await.ok();
    replica.close().await.ok();
    Ok(differences)
}

async fn lines(
    connection: &DatabaseConnection,
    kind: &str,
    query: &str,
) -> Result<BTreeSet<String>, DbErr> {
    let statement = Statement::from_string(connection.get_database_backend(), query.to_owned());
    let rows = connection.query_all_raw(statement).await?;
    let mut lines = BTreeSet::new();
    for row in rows {
        let line: String = row.try_get("", "line")?;
        lines.insert(format!("{kind}|{line}"));
    }
    Ok(lines)
}
