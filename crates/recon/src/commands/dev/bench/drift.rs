//! Drift: damage done to a converged replica on purpose, in plain SQL on
//! PostgreSQL, behind recon's back.
//!
//! For a share `s`, every live user, group and membership whose draw
//! `u = md5(seed, kind, tenant, key)` (uniform in `[0, 1)`) falls below `s`
//! is damaged, so the damage is spread over all tenants and kinds and is the
//! same every time the same seed and share meet the same replica state:
//!
//! * `u < s/3`: **changed** — users' `display_name` and groups' `name`
//!   garbled, and for `u < s/6` the version lowered too (memberships have no
//!   data: their version is lowered);
//! * `s/3 <= u < 2s/3`: **missing** — the row is deleted outright;
//! * `2s/3 <= u < s`: the row begets a **phantom**, a new row the source
//!   never had (a new user or group id in the same tenant, or the same
//!   group with the next user of the tenant), with the version of the row
//!   it was copied from, which is below the source's watermark.
//!
//! A replica store of a build from before `row_hash` was dropped (the
//! baseline of a side-by-side bench) still has that column: the helpers
//! give it a default, so the same statements damage both stores.

use super::workload::execute;
use anyhow::Context;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::Serialize;

/// Helper functions and views the drift and reladiff use, created (or
/// replaced) in the replica database.
const HELPERS: &str = r#"
CREATE OR REPLACE FUNCTION bench_unit(seed bigint, parts text) RETURNS double precision
  LANGUAGE sql IMMUTABLE AS
  $$ SELECT ('x' || substr(md5(seed::text || '/' || parts), 1, 8))::bit(32)::bigint / 4294967296.0 $$;
CREATE OR REPLACE FUNCTION bench_uuid(parts text) RETURNS text
  LANGUAGE sql IMMUTABLE AS
  $$ SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-'
            || substr(h, 17, 4) || '-' || substr(h, 21, 12) FROM md5(parts) AS h $$;
DO $$ DECLARE listed text; BEGIN
  FOREACH listed IN ARRAY ARRAY['replica_tenants', 'replica_users', 'replica_groups', 'replica_memberships'] LOOP
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = listed AND column_name = 'row_hash') THEN
      EXECUTE format('ALTER TABLE %I ALTER COLUMN row_hash SET DEFAULT %L', listed, '');
    END IF;
  END LOOP;
END $$;
CREATE OR REPLACE VIEW bench_live_tenants AS
  SELECT id, name, generation, sequence FROM replica_tenants WHERE NOT deleted;
CREATE OR REPLACE VIEW bench_live_users AS
  SELECT tenant_id, id, email, display_name, status, generation, sequence FROM replica_users WHERE NOT deleted;
CREATE OR REPLACE VIEW bench_live_groups AS
  SELECT tenant_id, id, name, generation, sequence FROM replica_groups WHERE NOT deleted;
CREATE OR REPLACE VIEW bench_live_memberships AS
  SELECT tenant_id, group_id, user_id, generation, sequence FROM replica_memberships WHERE NOT deleted;
"#;

/// What one application of drift did, per kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DriftCounts {
    /// The share applied.
    pub share: f64,
    /// Rows changed (data garbled and/or version lowered), per kind.
    pub changed: KindCounts,
    /// Rows deleted.
    pub missing: KindCounts,
    /// Phantom rows inserted.
    pub phantom: KindCounts,
}

/// A figure for users, groups and memberships.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindCounts {
    /// Users.
    pub users: u64,
    /// Groups.
    pub groups: u64,
    /// Memberships.
    pub memberships: u64,
}

impl KindCounts {
    /// All kinds.
    pub fn total(&self) -> u64 {
        self.users + self.groups + self.memberships
    }
}

impl DriftCounts {
    /// All damaged rows.
    pub fn total(&self) -> u64 {
        self.changed.total() + self.missing.total() + self.phantom.total()
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let line = |counts: &KindCounts| {
            format!(
                "{} ({} users, {} groups, {} memberships)",
                counts.total(),
                counts.users,
                counts.groups,
                counts.memberships
            )
        };
        format!(
            "drift {}: changed {}, missing {}, phantom {}",
            self.share,
            line(&self.changed),
            line(&self.missing),
            line(&self.phantom)
        )
    }
}

/// Creates the helper functions and views (idempotent).
pub async fn install_helpers(replica: &DatabaseConnection) -> anyhow::Result<()> {
    execute(replica, HELPERS)
        .await
        .context("create the bench's helper functions and views in the replica")?;
    Ok(())
}

/// Applies drift of `share` from `seed` to the replica, in one transaction.
pub async fn apply(
    replica: &DatabaseConnection,
    seed: u64,
    share: f64,
) -> anyhow::Result<DriftCounts> {
    let mut counts = DriftCounts {
        share,
        ..DriftCounts::default()
    };
    if share <= 0.0 {
        return Ok(counts);
    }
    let statements = Statements { seed, share };
    let script = [
        statements.delete("replica_users", "user", "id"),
        statements.change_named("replica_users", "user", "display_name"),
        statements.phantom_users(),
        statements.delete("replica_groups", "group", "id"),
        statements.change_named("replica_groups", "group", "name"),
        statements.phantom_groups(),
        statements.delete(
            "replica_memberships",
            "membership",
            "group_id || '/' || user_id",
        ),
        statements.change_memberships(),
        statements.phantom_memberships(),
    ];
    let transaction = replica.begin().await.context("begin the drift")?;
    let mut affected = Vec::with_capacity(script.len());
    for sql in &script {
        let rows = execute(&transaction, sql)
            .await
            .context("apply drift to the replica")?;
        affected.push(rows);
    }
    transaction.commit().await.context("commit the drift")?;
    counts.missing.users = affected[0];
    counts.changed.users = affected[1];
    counts.phantom.users = affected[2];
    counts.missing.groups = affected[3];
    counts.changed.groups = affected[4];
    counts.phantom.groups = affected[5];
    counts.missing.memberships = affected[6];
    counts.changed.memberships = affected[7];
    counts.phantom.memberships = affected[8];
    execute(
        replica,
        "ANALYZE replica_users, replica_groups, replica_memberships",
    )
    .await?;
    Ok(counts)
}

/// Builds the drift statements; seed and share are numbers formatted by
/// this program, never text from outside.
struct Statements {
    seed: u64,
    share: f64,
}

impl Statements {
    fn unit(&self, kind: &str, key: &str) -> String {
        format!(
            "bench_unit({}, '{kind}/' || tenant_id || '/' || {key})",
            self.seed
        )
    }

    fn delete(&self, table: &str, kind: &str, key: &str) -> String {
        let unit = self.unit(kind, key);
        let (low, high) = (self.share / 3.0, self.share * 2.0 / 3.0);
        format!("DELETE FROM {table} WHERE NOT deleted AND {unit} >= {low} AND {unit} < {high}")
    }

    /// Garbles `column` of a third of `table`'s share, and makes half of
    /// those rows a version older too (both kinds of a changed row).
    fn change_named(&self, table: &str, kind: &str, column: &str) -> String {
        let unit = self.unit(kind, "id");
        format!(
            "UPDATE {table} SET {column} = '~' || reverse({column}), \
             sequence = CASE WHEN {unit} < {half} THEN sequence - 1 ELSE sequence END \
             WHERE NOT deleted AND {unit} < {third}",
            half = self.share / 6.0,
            third = self.share / 3.0
        )
    }

    fn change_memberships(&self) -> String {
        let unit = self.unit("membership", "group_id || '/' || user_id");
        format!(
            "UPDATE replica_memberships SET sequence = sequence - 1 WHERE NOT deleted AND {unit} < {}",
            self.share / 3.0
        )
    }

    fn phantom_condition(&self, unit: &str) -> String {
        format!(
            "NOT deleted AND {unit} >= {} AND {unit} < {}",
            self.share * 2.0 / 3.0,
            self.share
        )
    }

    fn phantom_users(&self) -> String {
        let condition = self.phantom_condition(&self.unit("user", "id"));
        format!(
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted, deleted_at_ms) \
             SELECT tenant_id, phantom.new_id, phantom.new_email, display_name, status, generation, sequence, \
                    false, NULL \
             FROM replica_users, LATERAL (SELECT bench_uuid('phantom/{seed}/user/' || tenant_id || '/' || id) AS new_id, \
                                                 'phantom.' || email AS new_email) AS phantom \
             WHERE {condition} \
             ON CONFLICT (tenant_id, id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name, \
               status = excluded.status, generation = excluded.generation, sequence = excluded.sequence, \
               deleted = false, deleted_at_ms = NULL",
            seed = self.seed
        )
    }

    fn phantom_groups(&self) -> String {
        let condition = self.phantom_condition(&self.unit("group", "id"));
        format!(
            "INSERT INTO replica_groups (tenant_id, id, name, generation, sequence, deleted, deleted_at_ms) \
             SELECT tenant_id, phantom.new_id, name, generation, sequence, false, NULL \
             FROM replica_groups, LATERAL (SELECT bench_uuid('phantom/{seed}/group/' || tenant_id || '/' || id) AS new_id) AS phantom \
             WHERE {condition} \
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, generation = excluded.generation, \
               sequence = excluded.sequence, deleted = false, deleted_at_ms = NULL",
            seed = self.seed
        )
    }

    /// The same group with the tenant's next live user (by key) that is
    /// not yet a live member; tombstones of earlier phantoms come back.
    fn phantom_memberships(&self) -> String {
        let condition =
            self.phantom_condition(&self.unit("membership", "group_id || '/' || user_id"));
        format!(
            "INSERT INTO replica_memberships (tenant_id, group_id, user_id, generation, sequence, deleted, deleted_at_ms) \
             SELECT DISTINCT ON (source.tenant_id, source.group_id, next_user.id) \
                    source.tenant_id, source.group_id, next_user.id, source.generation, source.sequence, \
                    false, NULL \
             FROM (SELECT * FROM replica_memberships WHERE {condition}) AS source \
             CROSS JOIN LATERAL (SELECT users.id FROM replica_users AS users \
                                 WHERE users.tenant_id = source.tenant_id AND users.id > source.user_id AND NOT users.deleted \
                                 ORDER BY users.id LIMIT 1) AS next_user \
             ORDER BY source.tenant_id, source.group_id, next_user.id, source.sequence \
             ON CONFLICT (tenant_id, group_id, user_id) DO UPDATE SET generation = excluded.generation, \
               sequence = excluded.sequence, deleted = false, deleted_at_ms = NULL \
             WHERE replica_memberships.deleted"
        )
    }
}
