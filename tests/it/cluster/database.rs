//! The databases' side of the fixture: SQL on the replica database (drift,
//! the fence), and the row-by-row comparison with the monolith.

use super::fixture::Cluster;
use anyhow::{Context, bail, ensure};
use recon_monolith::verify::compare_schema_databases;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::{Duration, Instant};

impl Cluster {
    /// Runs SQL on the replica database; returns the rows affected.
    pub async fn replica_sql(&self, sql: &str) -> anyhow::Result<u64> {
        let connection = Database::connect(&self.replica_db.url).await?;
        let result = connection.execute_unprepared(sql).await;
        connection.close().await.ok();
        Ok(result
            .with_context(|| format!("replica SQL: {sql}"))?
            .rows_affected())
    }

    /// The text column `line` of the first row a query on the replica
    /// database returns.
    pub async fn replica_sql_one(&self, sql: &str) -> anyhow::Result<String> {
        let connection = Database::connect(&self.replica_db.url).await?;
        let row = connection
            .query_one_raw(Statement::from_string(
                connection.get_database_backend(),
                sql.to_owned(),
            ))
            .await;
        connection.close().await.ok();
        let row = row?.with_context(|| format!("no row: {sql}"))?;
        Ok(row.try_get("", "line")?)
    }

    /// The global fence's epoch in the replica database.
    pub async fn global_fence(&self) -> anyhow::Result<u64> {
        let connection = Database::connect(&self.replica_db.url).await?;
        let row = connection
            .query_one_raw(Statement::from_string(
                connection.get_database_backend(),
                "SELECT epoch FROM fences WHERE scope = '*'",
            ))
            .await?;
        connection.close().await.ok();
        let epoch: i64 = match row {
            Some(row) => row.try_get("", "epoch")?,
            None => 0,
        };
        Ok(epoch as u64)
    }

    /// Every replica's tenant-scoped source pages take `delay`: units that
    /// take a moment, so that something (an abort, the monolith's writes)
    /// happens while they run.
    pub fn slow_tenant_pages(&self, delay: Duration) {
        for replica in &self.replicas {
            replica
                .proxy
                .set_fault(recon_tests::faulty_source::Fault::Delay {
                    path_contains: "/tenants/".to_owned(),
                    delay,
                });
        }
    }

    /// Drifts the replica behind the consumers' back: garbled names, lost
    /// memberships, lost users and phantom users in the biggest tenant.
    pub async fn drift(&self) -> anyhow::Result<()> {
        let statements = [
            "UPDATE replica_users SET display_name = 'garbled' WHERE id IN \
             (SELECT id FROM replica_users WHERE NOT deleted ORDER BY id LIMIT 12)",
            "DELETE FROM replica_memberships WHERE user_id IN \
             (SELECT id FROM replica_users WHERE NOT deleted ORDER BY id DESC LIMIT 6)",
            "DELETE FROM replica_users WHERE id IN \
             (SELECT id FROM replica_users WHERE NOT deleted ORDER BY email LIMIT 5)",
            "INSERT INTO replica_users (tenant_id, id, email, display_name, status, generation, sequence, deleted) \
             SELECT tenant_id, phantom.head || substr(CAST(gen_random_uuid() AS TEXT), 9), 'phantom@example.com', 'phantom', 'active', 1, 1, FALSE \
             FROM (SELECT tenant_id FROM replica_users WHERE NOT deleted GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 1) AS biggest, \
             (VALUES ('00000000'), ('7fffffff'), ('ffffffff')) AS phantom(head)",
        ];
        for statement in statements {
            ensure!(
                self.replica_sql(statement).await? > 0,
                "drift changed nothing: {statement}"
            );
        }
        let differences = self.differences().await?;
        ensure!(
            differences.total > 20,
            "the drift is too small to prove anything"
        );
        Ok(())
    }

    /// How the replica differs from the monolith, row by row.
    pub async fn differences(&self) -> anyhow::Result<recon_monolith::verify::Differences> {
        Ok(
            compare_schema_databases(&self.schema, &self.monolith_db.url, &self.replica_db.url)
                .await?,
        )
    }

    /// Waits until the relay published everything and the replica equals
    /// the monolith, row by row.
    pub async fn wait_until_equal(&self, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let backlog = self.monolith.outbox_backlog().await?;
            let differences = self.differences().await?;
            if backlog == 0 && differences.is_empty() && differences.monolith_rows > 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: the replica does not equal the monolith after 90 s: {} rows differ \
                     (outbox backlog {backlog})\nonly in monolith: {:#?}\nonly in replica: {:#?}",
                    differences.total,
                    differences.only_in_monolith,
                    differences.only_in_replica
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
