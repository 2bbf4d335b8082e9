//! The PostgreSQL side of the conformance suite ([`PostgresCluster`]): each
//! cluster a prefix of its own in the test server's `postgres` database;
//! a member killed by deleting its session row from outside, as its expiry
//! would.

use super::Cluster;
use super::fixtures::{expect_fenced_off, within};
use anyhow::{Context, ensure};
use recon_coord_postgres::{PostgresCoordinator, PostgresSettings};
use recon_engine::cluster::{Coordinator, MemberInfo, MemberRole};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A short session, so that expiry fits in a test.
const TEST_TTL: Duration = Duration::from_secs(2);

/// Members of one service on the test PostgreSQL, under a prefix of their
/// own.
pub(crate) struct PostgresCluster {
    url: String,
    prefix: String,
    admin: DatabaseConnection,
    shutdown: CancellationToken,
    members: Mutex<BTreeMap<String, PostgresCoordinator>>,
}

impl PostgresCluster {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let url = recon_tests::postgres_server_url()?;
        let admin = Database::connect(url.as_str())
            .await
            .context("connect to the test PostgreSQL")?;
        Ok(Self {
            url,
            prefix: format!("/recon-test/{}", uuid::Uuid::new_v4().simple()),
            admin,
            shutdown: CancellationToken::new(),
            members: Mutex::new(BTreeMap::new()),
        })
    }

    async fn member_with_ttl(
        &self,
        id: &str,
        ttl: Duration,
    ) -> anyhow::Result<PostgresCoordinator> {
        let member = MemberInfo {
            id: id.to_owned(),
            admin_url: Some(format!("http://127.0.0.1:1/{id}")),
            joined_unix_ms: 1_700_000_000_000,
            role: MemberRole::Reconciler,
        };
        let mut settings = PostgresSettings::new(self.url.clone(), self.prefix.clone(), member);
        settings.session_ttl = ttl;
        let coordinator = recon_coord_postgres::connect(settings, self.shutdown.child_token())
            .await
            .with_context(|| format!("connect member {id} to PostgreSQL"))?;
        self.members_lock()
            .insert(id.to_owned(), coordinator.clone());
        Ok(coordinator)
    }

    fn members_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PostgresCoordinator>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn sql(&self, sql: &str, values: Vec<sea_orm::Value>) -> anyhow::Result<u64> {
        let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
        Ok(self.admin.execute_raw(statement).await?.rows_affected())
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster for PostgresCluster {
    async fn member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        Ok(Arc::new(self.member_with_ttl(id, TEST_TTL).await?))
    }

    async fn patient_member(&self, id: &str) -> anyhow::Result<Arc<dyn Coordinator>> {
        Ok(Arc::new(
            self.member_with_ttl(id, super::PATIENT_SESSION).await?,
        ))
    }

    /// Deletes the member's session row from outside, as its expiry would.
    async fn kill(&self, id: &str) -> anyhow::Result<()> {
        let member = self.members_lock().get(id).cloned();
        let member = member.with_context(|| format!("no member {id} to kill"))?;
        let session = member.backend().session_id();
        self.sql(
            "DELETE FROM recon_coord_sessions WHERE id = $1",
            vec![session.into()],
        )
        .await?;
        within(
            "the killed member to notice",
            member.session_lost().cancelled(),
        )
        .await
    }

    async fn stored_keys(&self) -> anyhow::Result<Option<usize>> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM recon_coord_entries WHERE prefix = $1",
            [self.prefix.clone().into()],
        );
        let row = self
            .admin
            .query_one_raw(statement)
            .await?
            .context("count rows")?;
        let count: i64 = row.try_get("", "n")?;
        Ok(Some(usize::try_from(count)?))
    }
}

/// A session that expired on the server's clock refuses the member's
/// writes even before its renewal task noticed: the leader frozen past its
/// TTL changes nothing, and another member leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused_before_the_member_notices() -> anyhow::Result<()> {
    let cluster = PostgresCluster::start().await?;
    let a = cluster
        .member_with_ttl("a", Duration::from_secs(30))
        .await?;
    let b = cluster.member("b").await?;
    let leadership = within("a to lead", a.campaign(&CancellationToken::new())).await??;
    // Expire a's session on the server's clock, as a freeze past its TTL
    // would; its renewal runs only every 10 s.
    let expired = cluster
        .sql(
            "UPDATE recon_coord_sessions SET expires_at = clock_timestamp() WHERE id = $1",
            vec![a.backend().session_id().into()],
        )
        .await?;
    ensure!(expired == 1, "a's session row was there");
    expect_fenced_off(
        "the expired leader's put_run",
        a.put_run(&leadership, &super::fixtures::run("r1", leadership.epoch))
            .await,
    )?;
    ensure!(b.current_run().await?.is_none(), "nothing written");
    let b_leads = within("b to lead", b.campaign(&CancellationToken::new())).await??;
    ensure!(b_leads.epoch > leadership.epoch, "a later epoch");
    ensure!(
        a.session_lost().is_cancelled(),
        "the refused member knows its session is gone"
    );
    Ok(())
}
