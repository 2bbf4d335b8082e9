//! Harness for recon's integration tests: throw-away databases on the real
//! PostgreSQL that `scripts/test.sh` (and so CI) starts, a real broker
//! ([`broker`]) and real `recon` processes ([`process`]) started by the
//! tests themselves, and private ZooKeeper servers ([`zookeeper`]).
//!
//! Every test gets its own PostgreSQL database (`CREATE DATABASE` on the
//! server named by `RECON_TEST_POSTGRES_URL`) or its own SQLite file, so tests
//! run in parallel without seeing each other's rows. A replica store is
//! migrated explicitly, as a deployment's `recon store migrate` does
//! ([`TestDatabase::replica_store`], [`migrate_store`]): connecting to it
//! no longer migrates. A missing service is a
//! test failure with a message saying how to start it, never a silent skip.

pub mod broker;
pub mod chromium;
pub mod etcd;
pub mod faulty_source;
pub mod otlp;
pub mod private_postgres;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod recon_build;
pub mod tls;
pub mod traced;
pub mod wait;
pub mod zookeeper;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};

/// Environment variable naming the PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:54329/postgres`.
pub const POSTGRES_URL_VAR: &str = "RECON_TEST_POSTGRES_URL";

/// A database that exists for one test.
pub struct TestDatabase {
    /// Connection URL of the database.
    pub url: String,
    /// Keeps a SQLite file's directory alive for the test's duration.
    _directory: Option<tempfile::TempDir>,
}

/// The two store backends every conformance test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the embedded default).
    Sqlite,
    /// A database on the real PostgreSQL server.
    Postgres,
}

impl TestDatabase {
    /// A fresh, empty database of the given backend.
    pub async fn create(backend: Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh database of the given backend holding an up-to-date replica
    /// store (migrated by [`migrate_store`]).
    pub async fn replica_store(backend: Backend) -> anyhow::Result<Self> {
        let database = Self::create(backend).await?;
        migrate_store(&database.url).await?;
        Ok(database)
    }

    /// A fresh SQLite database file in a temporary directory.
    pub fn sqlite() -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("create temporary directory")?;
        let path = directory.path().join("test.db");
        Ok(Self {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            _directory: Some(directory),
        })
    }

    /// A fresh database on the test PostgreSQL server.
    pub async fn postgres() -> anyhow::Result<Self> {
        let server_url = postgres_server_url()?;
        let name = format!("recon_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&server_url)
            .await
            .with_context(|| format!("connect to test PostgreSQL named by {POSTGRES_URL_VAR}"))?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .context("create test database")?;
        admin.close().await.ok();
        Ok(Self {
            url: replace_database_name(&server_url, &name)?,
            _directory: None,
        })
    }
}

/// Brings the replica store at `url` up to date, as `recon store migrate`
/// does; returns the migrations applied.
pub async fn migrate_store(url: &str) -> anyhow::Result<Vec<String>> {
    migrate_store_to(url, recon_core::schema::Schema::default_schema()).await
}

/// [`migrate_store`] to the tables of a declared schema.
pub async fn migrate_store_to(
    url: &str,
    schema: &recon_core::schema::Schema,
) -> anyhow::Result<Vec<String>> {
    recon_store::Store::migrate_to(url, recon_store::MigrationOptions::default(), schema)
        .await
        .context("migrate the replica store")
}

/// The URL of the test PostgreSQL server, or an error saying how to get one.
pub fn postgres_server_url() -> anyhow::Result<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => bail!(
            "{POSTGRES_URL_VAR} is not set: run the tests through scripts/test.sh, \
             which installs and starts PostgreSQL, etcd and the broker"
        ),
    }
}

fn replace_database_name(server_url: &str, name: &str) -> anyhow::Result<String> {
    let (without_query, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let Some(slash) = without_query.rfind('/') else {
        bail!("{POSTGRES_URL_VAR} has no database path");
    };
    let mut url = format!("{}/{name}", &without_query[..slash]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr().context("read the free port")?.port())
}
