//! Reconciliation on one node against real PostgreSQL (both databases), the
//! real monolith's Source API over HTTP (through a fault-injecting proxy
//! where a test needs faults), and a real broker where events matter.
//!
//! Every end state is checked with `compare_databases`, plain SQL over both
//! databases, never with recon's own diff.

mod digests;
mod epochs;
mod faults;
mod guard;
mod restore;

use recon_core::RunReport;
use recon_engine::{ReconcileOptions, Reconciler};
use recon_monolith::seed::{self, SeedSpec};
use recon_monolith::{Monolith, verify::compare_databases};
use recon_source::{HttpSource, SourceConfig};
use recon_store::Store;
use recon_tests::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Database, Statement};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A seeded monolith serving its Source API, and an empty replica store.
pub struct Fixture {
    pub monolith: Monolith,
    pub monolith_db: TestDatabase,
    pub replica_db: TestDatabase,
    pub store: Store,
    pub source_url: String,
    shutdown: CancellationToken,
}

impl Fixture {
    pub async fn new(spec: SeedSpec) -> Self {
        let monolith_db = TestDatabase::create(Backend::Postgres)
            .await
            .expect("monolith database");
        let replica_db = TestDatabase::replica_store(Backend::Postgres)
            .await
            .expect("replica database");
        let monolith = Monolith::connect(&monolith_db.url).await.expect("monolith");
        seed::run(&monolith, &spec).await.expect("seed");
        let store = Store::connect(&replica_db.url).await.expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let source_url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let server = monolith.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { server.serve(listener, None, token).await });
        Self {
            monolith,
            monolith_db,
            replica_db,
            store,
            source_url,
            shutdown,
        }
    }

    /// Reconciles through `source_url` with `options`.
    pub async fn reconcile_via(&self, source_url: &str, options: &ReconcileOptions) -> RunReport {
        let mut config = SourceConfig::new(source_url);
        config.max_retries = 2;
        config.retry_min_backoff = Duration::from_millis(20);
        config.retry_max_backoff = Duration::from_millis(100);
        config.request_timeout = Duration::from_secs(2);
        let source = HttpSource::new(&config).expect("source client");
        let reconciler = Reconciler::new(Arc::new(source), Arc::new(self.store.clone()));
        reconciler.run(options, &CancellationToken::new()).await
    }

    /// Number of rows that differ between the monolith and the replica.
    pub async fn differences(&self) -> usize {
        compare_databases(&self.monolith_db.url, &self.replica_db.url)
            .await
            .expect("compare")
            .total
    }

    /// Runs SQL on the replica database; returns rows affected.
    pub async fn replica_sql(&self, sql: &str) -> u64 {
        self.store
            .connection()
            .execute_unprepared(sql)
            .await
            .expect("replica sql")
            .rows_affected()
    }

    /// Every replica row, tombstones included, rendered — to prove that a
    /// run wrote nothing.
    pub async fn replica_snapshot(&self) -> Vec<String> {
        let connection = Database::connect(&self.replica_db.url)
            .await
            .expect("connect");
        let mut lines = Vec::new();
        for table in [
            "replica_tenants",
            "replica_users",
            "replica_groups",
            "replica_memberships",
        ] {
            let sql =
                format!("SELECT CAST(row_to_json(t) AS TEXT) AS line FROM {table} t ORDER BY 1");
            let rows = connection
                .query_all_raw(Statement::from_string(
                    connection.get_database_backend(),
                    sql,
                ))
                .await
                .expect("snapshot");
            for row in rows {
                lines.push(row.try_get::<String>("", "line").expect("line"));
            }
        }
        lines
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A small workload: a dozen tenants, tens of users each.
pub fn small_spec(seed: u64) -> SeedSpec {
    SeedSpec {
        seed,
        tenants: 12,
        users_per_tenant_mean: 40.0,
        max_users_per_tenant: 400,
        ..SeedSpec::default()
    }
}

/// Options for tests: small pages so that every unit spans several.
pub fn test_options(epoch: u64) -> ReconcileOptions {
    let mut options = ReconcileOptions::new(epoch);
    options.page_size = 7;
    options.replica_page_size = 5;
    options.write_batch = 50;
    options
}
